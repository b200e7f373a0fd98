"""A self-contained HTML report plus the JSON file holding every number it shows.

The implementation lives in :mod:`conceptlens._html.document` (below every layer, so
result objects anywhere can return report sections); this module is its public home.
"""

from conceptlens._html.document import *  # noqa: F403
from conceptlens._html.document import __all__  # noqa: F401
