"""``make plots``: ``dvc plots show`` as a page that renders offline.

``dvc plots show`` writes ``dvc_plots/index.html`` with ``<script src>`` tags that load vega, vega-lite
and vega-embed from a CDN: offline (a cluster node, a train) the page is blank. DVC takes an HTML
template (``--html-template``) and puts those tags where the template says ``{scripts}``; this template
has no ``{scripts}``, and inlines the three libraries instead, from the ``vl-convert-python`` package
(``vl_convert.javascript_bundle()``, the ``plots`` extra that ``make install`` installs). The bundle runs
inside a function, so its top-level names cannot clash with DVC's per-plot ``var spec``; it sets
``window.vegaEmbed``, which DVC's per-plot scripts call. Extra arguments go to ``dvc plots show``
(``--open``, targets, ``-o``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>TWilBERT plots</title>
    <!-- vega, vega-lite and vega-embed (BSD-3-Clause), inlined from vl-convert-python: no network needed -->
    <script type="text/javascript">
(function () {
BUNDLE
})();
    </script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_template() -> str:
    """The HTML template with the chart libraries inlined (raises ImportError without vl-convert)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()  # window.vegaEmbed, window.vega, window.vegaLite
    bundle = bundle.replace("</script", "<\\/script")  # cannot end the inline script early
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in bundle:  # DVC fills these by plain replacement, anywhere in the page
            raise RuntimeError(f"the vega bundle contains {placeholder!r}: it cannot be inlined in a DVC template")
    return TEMPLATE.replace("BUNDLE", bundle)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        template = offline_template()
    except ImportError:
        print("error: make plots needs vl-convert-python (the plots extra): make install, or "
              "pip install -c constraints.txt -e '.[plots]'; `dvc plots show` works without it when online", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="twilbert-plots-") as tmp:
        path = Path(tmp) / "offline.html"
        path.write_text(template, encoding="utf-8")
        return subprocess.call(["dvc", "plots", "show", "--html-template", str(path), *args])


if __name__ == "__main__":
    raise SystemExit(main())
