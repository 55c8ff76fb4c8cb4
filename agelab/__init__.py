"""agelab: train, compare, export and serve face age estimation models, every run in MLflow."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations must not check for updates online

from agelab.config import register_resolvers  # noqa: E402
from agelab.quiet import quiet_third_party  # noqa: E402

register_resolvers()
quiet_third_party()
__version__ = "0.1.0"
