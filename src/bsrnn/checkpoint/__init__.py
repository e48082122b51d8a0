"""The checkpoint engine: crash-proof, verified, exact. Imports torch, xxhash and the standard library only.

- ``CheckpointManager``: registered state -> ``checkpoint_last.pt`` / ``checkpoint_best.pt``.
- ``load_checkpoint``/``verify``: open or check a run directory or file, digest first.
- ``RNGStreams``: every random stream as one stateful object.
- ``PreemptionGuard``: turns SIGTERM/SIGUSR1/SIGINT into "save at the next safe point".

File format, commit protocol and their reasons: ``fileformat`` and ``atomic``.
"""

from bsrnn.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointForeignError,
    CheckpointIncompleteError,
    CheckpointNewerFormatError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    StateMismatchError,
    UnsafeStateError,
)
from bsrnn.checkpoint.fileformat import FORMAT_NAME, FORMAT_VERSION, load_verified, write_checkpoint
from bsrnn.checkpoint.loading import (
    BEST_NAME,
    LAST_NAME,
    SUPERSEDED_NAME,
    WHICH_CHOICES,
    LoadedCheckpoint,
    VerifyResult,
    candidates,
    load_checkpoint,
    superseded_path,
    superseded_paths,
    verify,
)
from bsrnn.checkpoint.index import INDEX_NAME, IndexEntry, read_index
from bsrnn.checkpoint.lock import LockLostError, RunDirectoryBusyError, RunDirectoryLock
from bsrnn.checkpoint.manager import (
    CheckpointManager,
    NonFiniteStateError,
    RestoreResult,
    SaveResult,
    Stateful,
)
from bsrnn.checkpoint.plain import nonfinite_tensor_keys
from bsrnn.checkpoint.preserve import KeptState, kept_states, keep_states_at_risk
from bsrnn.checkpoint.rng import RNGStreams
from bsrnn.checkpoint.signals import PreemptionGuard, deferred_signals

__all__ = [
    "BEST_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "LAST_NAME",
    "SUPERSEDED_NAME",
    "WHICH_CHOICES",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointForeignError",
    "CheckpointIncompleteError",
    "CheckpointManager",
    "CheckpointNewerFormatError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "IndexEntry",
    "KeptState",
    "LoadedCheckpoint",
    "NonFiniteStateError",
    "RestoreResult",
    "RunDirectoryLock",
    "PreemptionGuard",
    "RNGStreams",
    "LockLostError",
    "RunDirectoryBusyError",
    "SaveResult",
    "StateMismatchError",
    "Stateful",
    "UnsafeStateError",
    "VerifyResult",
    "deferred_signals",
    "candidates",
    "keep_states_at_risk",
    "kept_states",
    "load_checkpoint",
    "nonfinite_tensor_keys",
    "superseded_path",
    "superseded_paths",
    "load_verified",
    "read_index",
    "verify",
    "write_checkpoint",
]
