-- Replays pre-signed raw requests for benchmarks/loadgen.py (see its docstring for the file format).
-- Each call sends one request chosen at random; done() writes the summary as JSON to BENCH_WRK_OUT.

local requests = {}
local count = 0

local function load(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    count = count + 1
    requests[count] = data:sub(nl + 1, nl + len)
    pos = nl + len + 1
  end
end

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(_args)
  load(os.getenv("BENCH_REQUESTS"))
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return requests[math.random(count)]
end

function done(summary, latency, _requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
  f:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
  f:close()
end
