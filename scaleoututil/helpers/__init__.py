"""Model helpers: how a framework's parameters become bytes and how they are combined."""
