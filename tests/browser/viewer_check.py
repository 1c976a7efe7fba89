"""Drives the deviation-map viewer in Debian's headless Chromium with Playwright.

usage: viewer_check.py BASE_URL TOKEN JOB_ID EXPECTED_JSON SCREENSHOT_PNG

EXPECTED_JSON: {"cluster": the report's first significant cluster, "thresholds": {channel: the
report's calibrated |z| threshold}}.

Checks that the page refuses a browser without a session; opens a session from the bearer
token (the token travels only in the Authorization header of that one request); loads the page
and waits until it says it is ready; checks the overlay's default cut is the calibrated
threshold and that the threshold control changes it; checks the case view's canvas is not blank (pixel
variance); clicks the first cluster and reads the crosshair back from NiiVue's state
(scene.crosshairPos through frac2mm), which must lie within one voxel of the expected peak
(world mm); shows the template beside the case, where the crosshair must be at the cluster's
template-space peak; saves a screenshot; and fails when the page logged an error. Prints one JSON line of what it measured; exits
non-zero naming the first failed check.
"""

import json
import sys
import tempfile

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Pixel statistics of a view, read in the same task as a fresh draw (the WebGL buffer is only
# valid until the frame is composited).
CANVAS_STATS = """(which) => {
  const nv = window.pedinormViewer[which];
  nv.drawScene();
  const source = nv.canvas;
  const copy = document.createElement('canvas');
  copy.width = source.width;
  copy.height = source.height;
  const context = copy.getContext('2d');
  context.drawImage(source, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  let n = 0, sum = 0, squares = 0;
  for (let i = 0; i < data.length; i += 4) {
    const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
    n += 1; sum += v; squares += v * v;
  }
  const mean = sum / n;
  return { width: copy.width, height: copy.height, mean, variance: squares / n - mean * mean };
}"""

# The crosshair in world mm and the background volume's voxel size.
CROSSHAIR = """(which) => {
  const nv = window.pedinormViewer[which];
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  const pixDims = nv.volumes[0].hdr.pixDims;
  return { mm: [mm[0], mm[1], mm[2]], voxel: [pixDims[1], pixDims[2], pixDims[3]] };
}"""


# Whether the case view's image (under the maps) is the volume NAME (NiiVue names a volume by
# its URL's file name); false while it loads.
SHOWN_IMAGE = (
    "(() => { const v = window.pedinormViewer.caseView.volumes[0];"
    " return !!v && String(v.name || v.url || '').includes('NAME'); })()"
)


def fail(message):
    print(f"viewer check failed: {message}", file=sys.stderr)
    sys.exit(1)


def within_a_voxel(crosshair, peak):
    return all(abs(c - p) <= v + 1e-3 for c, p, v in zip(crosshair["mm"], peak, crosshair["voxel"]))


def wait_until(page, expression, seconds):
    """Polls `expression` from outside the page (the page's CSP forbids evaluating strings in
    it, which Playwright's wait_for_function would do)."""
    for _ in range(int(seconds * 10)):
        if page.evaluate(expression):
            return True
        page.wait_for_timeout(100)
    return False


def wait_ready(page):
    wait_until(page, "document.body.dataset.state !== 'loading'", 90)
    state = page.evaluate("document.body.dataset.state")
    if state != "ready":
        fail(f"the page did not load: {page.inner_text('#error')}")


def main():
    base, token, job, expected, screenshot = sys.argv[1:6]
    expected = json.loads(expected)
    peak = expected["cluster"]
    url = f"{base}/viewer/jobs/{job}"
    measured = {}
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1500, "height": 820},
        )
        page = context.new_page()
        console = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"page error: {error}"))

        # Without a session the page is refused.
        refused = page.goto(url)
        if refused.status != 401:
            fail(f"without a session the page answered {refused.status}, not 401")
        measured["without_session"] = refused.status

        # A session from the token; the cookie is HttpOnly and SameSite=Strict.
        opened = context.request.post(f"{base}/viewer/session", headers={"Authorization": f"Bearer {token}"})
        if opened.status != 201:
            fail(f"opening a session answered {opened.status}: {opened.text()}")
        cookies = [c for c in context.cookies() if c["name"] == "pedinorm_viewer"]
        if len(cookies) != 1 or not cookies[0]["httpOnly"] or cookies[0]["sameSite"] != "Strict":
            fail(f"session cookie not as expected: {cookies}")
        if token in page.url or any(token in c["value"] for c in context.cookies()):
            fail("the token reached a URL or a cookie")

        console.clear()  # the refused load's 401s are expected
        loaded = page.goto(url)
        if loaded.status != 200:
            fail(f"with a session the page answered {loaded.status}")
        wait_ready(page)
        if page.evaluate("document.cookie").find("pedinorm_viewer") >= 0:
            fail("the page's script can read the session cookie")
        page.wait_for_timeout(1500)

        # The overlay's default cut is the calibrated threshold of its channel; the control moves it.
        channel = page.evaluate("document.getElementById('channel').value")
        cut = page.evaluate("window.pedinormViewer.caseView.volumes[1].cal_min")
        if abs(cut - expected["thresholds"][channel]) > 0.01:
            fail(f"the {channel} map is cut at {cut}, not at the calibrated {expected['thresholds'][channel]}")
        page.fill("#threshold", "4.5")
        page.press("#threshold", "Enter")
        page.wait_for_timeout(300)
        moved = page.evaluate("window.pedinormViewer.caseView.volumes[1].cal_min")
        if abs(moved - 4.5) > 1e-6:
            fail(f"the threshold control did not move the cut (now {moved})")
        measured["default_cut"] = {"channel": channel, "z": cut}

        stats = page.evaluate(CANVAS_STATS, "caseView")
        measured["canvas"] = stats
        if stats["width"] < 100 or stats["variance"] < 20:
            fail(f"the case view looks blank: {stats}")

        rows = page.locator("#clusters tbody tr")
        if rows.count() == 0:
            fail("no cluster is listed")
        rows.first.click()
        page.wait_for_timeout(1000)
        crosshair = page.evaluate(CROSSHAIR, "caseView")
        measured["case_crosshair"] = crosshair
        if not within_a_voxel(crosshair, peak["peak_native_mm"]):
            fail(f"case crosshair {crosshair} is not at the peak {peak['peak_native_mm']}")

        # The template beside the case, its crosshair at the cluster's template-space peak.
        page.check("#show-template")
        if not wait_until(
            page, "!!window.pedinormViewer.templateView && window.pedinormViewer.templateView.volumes.length >= 2", 60
        ):
            fail("the template view did not load")
        page.wait_for_timeout(500)
        rows.first.click()
        page.wait_for_timeout(1000)
        crosshair = page.evaluate(CROSSHAIR, "templateView")
        measured["template_crosshair"] = crosshair
        if not within_a_voxel(crosshair, peak["peak_template_mm"]):
            fail(f"template crosshair {crosshair} is not at the peak {peak['peak_template_mm']}")
        measured["template_canvas"] = page.evaluate(CANVAS_STATS, "templateView")

        # Every contrast of the study can be shown under the maps.
        contrasts = page.evaluate("[...document.getElementById('contrast').options].map(o => o.text)")
        measured["contrasts"] = contrasts
        if contrasts != ["T1w", "T2w"]:
            fail(f"the image choice offers {contrasts}, not the study's T1w and T2w")
        page.select_option("#contrast", label="T2w")
        if not wait_until(page, SHOWN_IMAGE.replace("NAME", "case-2"), 30):
            fail("choosing T2w did not load the study's T2w volume")
        page.wait_for_timeout(500)
        stats = page.evaluate(CANVAS_STATS, "caseView")
        if stats["variance"] < 20:
            fail(f"the T2w view looks blank: {stats}")
        page.select_option("#contrast", label="T1w")
        wait_until(page, SHOWN_IMAGE.replace("NAME", "case-1"), 30)

        # The regional volumes: one row per measure with a centile, and every growth chart drawn.
        if not page.is_visible("#centiles-section"):
            fail("the regional volumes and centiles are not shown")
        centile_rows = page.locator("#centiles tbody tr").count()
        if centile_rows != expected["centiles"]:
            fail(f"{centile_rows} centile rows shown, the report has {expected['centiles']}")
        charts = page.evaluate(
            "[...document.querySelectorAll('#charts img')].map(i => ({alt: i.alt, width: i.naturalWidth}))"
        )
        measured["growth_charts"] = charts
        if sorted(c["alt"] for c in charts) != sorted(expected["charts"]) or any(c["width"] == 0 for c in charts):
            fail(f"growth charts shown {charts}, expected {expected['charts']} all loaded")

        page.screenshot(path=screenshot, full_page=True)
        errors = [line for line in console if line.startswith(("error", "page error"))]

        # Signing out ends the session: the page empties itself and a reload is refused.
        page.click("#sign-out")
        if not wait_until(page, "document.body.dataset.state === 'signed-out'", 10):
            fail("the sign-out button did not sign out")
        reloaded = page.goto(url)
        if reloaded.status != 401:
            fail(f"after signing out the page answered {reloaded.status}, not 401")
        measured["after_sign_out"] = reloaded.status
        measured["console_errors"] = errors
        context.close()
    if errors:
        fail(f"the page logged errors: {errors}")
    print(json.dumps(measured))


if __name__ == "__main__":
    main()
