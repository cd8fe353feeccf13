"""``python -m benchmarks [--quick] ...`` runs the benchmarks; ``python -m benchmarks report FILE.json``
prints the README tables of a results file."""

import sys

from benchmarks.runner import main, report_main

if len(sys.argv) > 1 and sys.argv[1] == "report":
    sys.exit(report_main(sys.argv[2:]))
sys.exit(main())
