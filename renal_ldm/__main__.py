import sys

from renal_ldm.cli import main

sys.exit(main())
