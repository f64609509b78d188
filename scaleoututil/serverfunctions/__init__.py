"""Server functions: user code that the server runs each round (client selection, client settings,
custom aggregation). Import the base class from here or, as the official examples do, from
`scaleoututil.serverfunctions.serverfunctionsbase` / `scaleoututil.serverfunctions.allowed_import`."""

from scaleoututil.serverfunctions.serverfunctionsbase import RoundType, ServerFunctionsBase

__all__ = ["RoundType", "ServerFunctionsBase"]
