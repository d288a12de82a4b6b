"""The Jobs page in a real browser (issue 14): a statistics job over the demo data set started from the
page shows its progress (images done, rate, time left) while it runs in the background, then its
finished result, written into the server's results folder."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser import RUN_TIMEOUT_MS, AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

#: enough images for the page to poll the job a few times on these 2 shared cores (about 50 images/s)
SAMPLES = 400


def test_a_stats_job_shows_its_progress_then_its_result(app: AppPage, screenshots, results_root):
    app.sidebar().get_by_text("Data set", exact=True).click()
    samples = app.page.get_by_role("spinbutton", name="Samples", exact=True)
    samples.fill(str(SAMPLES))
    app.act(lambda: samples.press("Enter"))
    expect(app.sidebar().get_by_text(f"Data set: {SAMPLES} demo samples · {SAMPLES} images")).to_be_visible()
    app.go_to("Jobs")
    main = app.main()
    expect(main.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(main.get_by_text(f"Over {SAMPLES} demo samples ({SAMPLES} images)", exact=False)).to_be_visible()

    app.act(main.get_by_role("button", name="Start", exact=True).click)
    progress = main.get_by_text(re.compile(rf"^\d+ of {SAMPLES} images · [\d.]+ images/s · "))
    expect(progress.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(main.get_by_role("button", name="Cancel", exact=True)).to_be_visible()
    app.screenshot(screenshots, "jobs-running")

    expect(main.get_by_text(re.compile(rf"^Done in .*: {SAMPLES} of {SAMPLES} images"))).to_be_visible(
        timeout=RUN_TIMEOUT_MS)
    expect(main.get_by_text(re.compile(rf"^Channel statistics · {SAMPLES} demo samples · {SAMPLES} images · "))
           ).to_be_visible()
    expect(main.get_by_text(re.compile(r"^\d+ dead channels \(ε = 0\) in 14 layers"))).to_be_visible()
    app.assert_no_exception()
    assert list(results_root.glob("channel_stats-*/manifest.json")), "the result is not in the server's folder"
    app.screenshot(screenshots, "jobs-finished")
