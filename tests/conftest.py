from tests.app_fixtures import *  # noqa: F403

# ---- encoder fixtures (model/encoders, tests/test_encoders_*.py): keep this block as one unit ----
from tests.conftest_encoders import *  # noqa: E402, F403

# ---- end of encoder fixtures ----
