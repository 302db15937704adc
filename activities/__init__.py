"""Every side effect of the product, one module per external system.

Activities are methods on classes that receive their clients and settings (dependency
injection), take one pydantic model and return one. Blocking SDKs run off the event loop.
"""
