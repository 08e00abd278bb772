import sys
from pathlib import Path

from integrity.schemas import write_all

for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
    print(path)
