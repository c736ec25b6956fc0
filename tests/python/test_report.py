"""attnkit.plot and attnkit.report: the pictures are written and the page shows them."""

import os
import re

import pytest

pytest.importorskip("matplotlib")

import attnkit  # noqa: E402
from attnkit import plot, report  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_mask_views(tmp_path):
    m = attnkit.Pattern("power:block=64,window=3").plan(nq=512, nk=512)
    kinds = m.blocks()
    assert kinds.shape == (8, 8) and set(kinds.ravel()) <= {0, 1, 2}
    for view in ("block", "element"):
        path = plot.save(plot.mask(m, view=view), str(tmp_path / f"{view}.png"))
        assert open(path, "rb").read(8) == PNG
    with pytest.raises(ValueError, match="view"):
        plot.mask(m, view="3d")


@pytest.mark.skipif(not os.path.exists(os.path.join(report._REPO, "build", "attnkit")),
                    reason="needs the CLI (make build)")
def test_report_writes_a_page_whose_images_exist(tmp_path):
    index = report.write_report(str(tmp_path), quick=True, with_model=False)
    page = open(index).read()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "speedup.png" in images and "recall.png" in images and len(images) >= 6
    for name in images:
        assert open(tmp_path / name, "rb").read(8) == PNG
    assert "<table>" in page and "window" in page
