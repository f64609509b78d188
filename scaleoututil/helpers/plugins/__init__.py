"""Helper plugins; each module defines a `Helper` class (see `scaleoututil.helpers.helpers.get_helper`)."""
