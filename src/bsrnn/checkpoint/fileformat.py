"""The checkpoint file: a plain ``torch.save`` zip whose archive comment holds a SHA-256 digest.

Why the zip comment: a checkpoint must open with plain ``torch.load(path, weights_only=True)``
(users' analysis scripts do), so the digest cannot wrap the file; and it must cover every byte, because
torch does not check the zip CRCs on load and a flipped byte anywhere (tensor data, pickle,
zip headers) must be detected. The zip format ends with an end-of-central-directory record
(EOCD) whose last field is a comment of any length, which torch and ``zipfile`` accept. So:

    file   = zip bytes as torch wrote them, up to the EOCD's comment-length field
             + comment length (2 bytes, little endian) + comment
    comment = b"bsrnn-checkpoint v1 sha256=" + 64 hex digits
    digest = SHA-256 of everything before the comment-length field

Verification reads the file once, checks the EOCD signature and comment, recomputes the
digest, and only then unpickles (with ``weights_only=True``) from the bytes it verified, so
no byte that was not checked is ever used.

Verified writes (``write_checkpoint(..., verify=True)``, what ``CheckpointManager`` does with
``verify_writes``): each piece ``torch.save`` produces is written to the file, read back through
the same descriptor and compared byte for byte with what ``torch.save`` produced, and the digest
is computed over those read-back bytes; the trailer is read back and compared too, and the file
size must equal the bytes written. So the digest in the trailer is the digest of the file as
the kernel holds it, and it equals the digest of what ``torch.save`` produced. Like the earlier
whole-file re-read after fsync (which read the same page cache), this checks the write path
(short or misplaced writes, the trailer, the file's length), not the disk medium: that is what
the digest check at every load is for. Piecewise comparison replaced the re-read because the
re-read cost a second full SHA-256 pass and a second copy of the file (about half a save).

Speed (measured in ``benchmarks/checkpoint_io.py``): SHA-256 runs in a worker thread in both
directions (``hashlib`` releases the GIL on large buffers), so it overlaps writing and reading
instead of adding to them; writeback to the disk is started while later pieces are still being
produced, so the final fsync has little left to do; and loading hands the verified buffer to
``torch.load`` without first copying it into a ``BytesIO``.
"""

# The implementation lives in ``trailer`` (constants and trailer layout), ``hashing`` (the
# background SHA-256), ``writing`` and ``reading``; these names stay importable from here.
from bsrnn.checkpoint.trailer import COMMENT_LENGTH as COMMENT_LENGTH
from bsrnn.checkpoint.trailer import EOCD_SIGNATURE as EOCD_SIGNATURE
from bsrnn.checkpoint.trailer import EOCD_SIZE as EOCD_SIZE
from bsrnn.checkpoint.trailer import MAGIC as MAGIC
from bsrnn.checkpoint.trailer import FORMAT_NAME as FORMAT_NAME
from bsrnn.checkpoint.trailer import FORMAT_VERSION as FORMAT_VERSION
from bsrnn.checkpoint.trailer import TRAILER_SIZE as TRAILER_SIZE
from bsrnn.checkpoint.trailer import Buffer as Buffer
from bsrnn.checkpoint.reading import VerifiedBytes as VerifiedBytes
from bsrnn.checkpoint.reading import load_verified as load_verified
from bsrnn.checkpoint.reading import read_verified_bytes as read_verified_bytes
from bsrnn.checkpoint.reading import unpickle as unpickle
from bsrnn.checkpoint.writing import write_checkpoint as write_checkpoint
from bsrnn.checkpoint.writing import write_file_durably as write_file_durably
