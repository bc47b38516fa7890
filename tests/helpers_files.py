"""What tests compare to say "nothing changed on disk"."""

import hashlib
import os


def tree_digest(*paths) -> str:
    """Every file's path (relative to its folder argument) and bytes, for folders or files."""
    h = hashlib.sha256()
    for top in map(str, paths):
        if os.path.isfile(top):
            walk = [(os.path.dirname(top), [], [os.path.basename(top)])]
            base = os.path.dirname(top)
        else:
            walk, base = sorted(os.walk(top)), top
        for root, dirs, files in walk:
            dirs.sort()
            for name in sorted(files):
                h.update(os.path.relpath(os.path.join(root, name), base).encode())
                with open(os.path.join(root, name), "rb") as f:
                    h.update(f.read())
    return h.hexdigest()
