"""boto3 from async tests: calls run in a thread (boto3 is synchronous), errors by their AWS code."""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.exceptions
import pytest


def error_code(exc: BaseException) -> str:
    assert isinstance(exc, botocore.exceptions.ClientError)
    return str(exc.response["Error"]["Code"])


async def aws_call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def expect_error(fn: Any, **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return info.value
