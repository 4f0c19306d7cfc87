import sys

from lungseg.cli import keep_freed_memory, main

keep_freed_memory()
sys.exit(main())
