import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

import matplotlib  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
