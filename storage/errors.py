"""Domain errors. Each carries a message that is safe to show to a user as it is."""


class StorageError(Exception):
    """Base class; ``str(error)`` is a complete, user-facing sentence fragment."""


class InvalidInput(StorageError):
    """The caller's input is not acceptable; nothing was changed."""


class KeyStateConflict(InvalidInput):
    """The key is not in a state that allows this (rotating a revoked or already rotated key)."""


class KeyNotFound(StorageError):
    def __init__(self, key_id: str):
        super().__init__(f"no key with id {key_id!r}")
        self.key_id = key_id


class AdminNotFound(StorageError):
    def __init__(self, user_id: str):
        super().__init__(f"{user_id} is not a stored admin")
        self.user_id = user_id


class DatabaseUnavailable(StorageError):
    """The database could not be reached or answered with an error."""


class CorruptEntry(StorageError):
    """An audit row that apikeys could not have written (its time or details do not parse): the
    database was changed outside apikeys. Names the entry, never repeats the bad value."""

    def __init__(self, entry_id: int, problem: str):
        super().__init__(f"audit entry {entry_id}: {problem} (the row was changed outside apikeys)")
        self.entry_id = entry_id
        self.problem = problem
