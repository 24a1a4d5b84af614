"""Facts fixed when the tool is built.

BUILD_TIME is the freshness floor: a manifest that expired before the tool was built is never
accepted, even on a machine whose clock says 1970. ``make zipapp`` rewrites this file inside the
zipapp from the time of the last commit (SOURCE_DATE_EPOCH), so builds stay reproducible.
"""

BUILD_TIME = "2026-11-24T00:00:00Z"
