"""The checkpoint file: a plain ``torch.save`` zip whose archive comment holds a digest of the rest.

Why the zip comment: a checkpoint must open with plain ``torch.load(path, weights_only=True)``
(users' analysis scripts do), so the digest cannot wrap the file; and it must cover every byte, because
torch does not check the zip CRCs on load and a flipped byte anywhere (tensor data, pickle,
zip headers) must be detected. The zip format ends with an end-of-central-directory record
(EOCD) whose last field is a comment of any length, which torch and ``zipfile`` accept. So:

    file   = zip bytes as torch wrote them, up to the EOCD's comment-length field
             + comment length (2 bytes, little endian) + comment
    comment = b"bsrnn-checkpoint v2 xxh3-128=" + 32 hex digits       (format 2, written now)
            | b"bsrnn-checkpoint v1 sha256=" + 64 hex digits         (format 1, still read)
    digest = the comment's algorithm over everything before the comment-length field

The comment names its algorithm, so a file says how to verify it: every version listed in
``trailer.DIGESTS`` is read and verified, and only the writer's default changes. The payload's
``format_version`` is the version of the code that wrote it (a newer one is refused).

Why xxh3-128 since format 2: the digest guards against corruption (a flipped bit, a torn or
truncated write, a file overwritten by something else), not forgery; anyone who can edit the
file can recompute any unkeyed digest, SHA-256 included, and the weights-only unpickler and the
structure check are what stand against hostile files. XXH3 is built for exactly this (its
128-bit form: a random corruption goes unnoticed with probability 2^-128) and runs at about
9.5 GB/s per core against SHA-256's 1.4 GB/s (SHA-NI) on the machine this was measured on;
BLAKE3 (1.9-2.5 GB/s on one thread there) was the other candidate. SHA-256 was 30 % of a
durable save's CPU time (see BENCHMARKS.md). ``xxhash`` is a self-contained C extension with
wheels for Linux, macOS and Windows; XXH3's output is frozen since xxHash 0.8.0.

Verification reads the trailer first (it names the algorithm), then the file once while
hashing it, parses the trailer again from the bytes read, and only then unpickles (with
``weights_only=True``) from the bytes it verified, so no byte that was not checked is ever
used. Digests are labelled with their algorithm wherever they go (``"xxh3-128:<hex>"``: the
index, lineage records, ``bsrnn ckpt inspect/verify``).

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

Speed (measured in ``benchmarks/checkpoint_io.py``): the digest runs in a worker thread in both
directions (``hashlib`` and ``xxhash`` release the GIL on large buffers), so it overlaps writing and reading
instead of adding to them; writeback to the disk is started while later pieces are still being
produced, so the final fsync has little left to do; and loading hands the verified buffer to
``torch.load`` without first copying it into a ``BytesIO``.
"""

# The implementation lives in ``trailer`` (constants, digest algorithms and trailer layout),
# ``hashing`` (the background digest), ``writing`` and ``reading``; these names stay importable
# from here.
from bsrnn.checkpoint.trailer import COMMENT_LENGTH as COMMENT_LENGTH
from bsrnn.checkpoint.trailer import DIGEST as DIGEST
from bsrnn.checkpoint.trailer import DIGESTS as DIGESTS
from bsrnn.checkpoint.trailer import EOCD_SIGNATURE as EOCD_SIGNATURE
from bsrnn.checkpoint.trailer import EOCD_SIZE as EOCD_SIZE
from bsrnn.checkpoint.trailer import MAGIC as MAGIC
from bsrnn.checkpoint.trailer import FORMAT_NAME as FORMAT_NAME
from bsrnn.checkpoint.trailer import FORMAT_VERSION as FORMAT_VERSION
from bsrnn.checkpoint.trailer import TRAILER_SIZE as TRAILER_SIZE
from bsrnn.checkpoint.trailer import Buffer as Buffer
from bsrnn.checkpoint.trailer import DigestAlgorithm as DigestAlgorithm
from bsrnn.checkpoint.trailer import digest_algorithm as digest_algorithm
from bsrnn.checkpoint.trailer import short_digest as short_digest
from bsrnn.checkpoint.reading import VerifiedBytes as VerifiedBytes
from bsrnn.checkpoint.reading import load_verified as load_verified
from bsrnn.checkpoint.reading import read_verified_bytes as read_verified_bytes
from bsrnn.checkpoint.reading import unpickle as unpickle
from bsrnn.checkpoint.writing import write_checkpoint as write_checkpoint
from bsrnn.checkpoint.writing import write_file_durably as write_file_durably
