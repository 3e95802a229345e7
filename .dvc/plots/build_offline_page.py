"""Build .dvc/plots/offline.html: DVC's plots page with Vega, Vega-Lite and
vega-embed inlined, so `dvc plots show` renders with no network.

    npm install vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
    python build_offline_page.py node_modules > .dvc/plots/offline.html
"""

import json
import re
import sys
from pathlib import Path

BUILDS = ["vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js"]
# What the three browser builds bundle, for their license notices.
BUNDLED = re.compile(
    r"^(vega.*|d3-.*|delaunator|robust-predicates|topojson-client|internmap|fast-json-patch|json-stringify-pretty-compact|semver|tslib)$"
)
LICENSE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license")


def notices(modules: Path) -> str:
    """Each license text once, after the packages (name, version, licence) it covers."""
    fallback = (modules / "vega-embed" / "LICENSE").read_text().strip()
    by_text: dict[str, list[str]] = {}
    for package in sorted(p for p in modules.iterdir() if BUNDLED.match(p.name)):
        meta = json.loads((package / "package.json").read_text())
        text = next(
            ((package / name).read_text().strip() for name in LICENSE_FILES if (package / name).is_file()),
            None,
        )
        # The vega packages share one BSD-3-Clause text; some leave it out of their npm package.
        by_text.setdefault(text or fallback, []).append(
            f"{meta['name']} {meta['version']} ({meta.get('license')})"
        )
    parts = [", ".join(packages) + ":\n" + text for text, packages in by_text.items()]
    return "\n\n".join(parts).replace("--", "- -")  # no "--" inside an HTML comment


def main(modules: Path) -> None:
    versions = ", ".join(
        f"{name} {json.loads((modules / name / 'package.json').read_text())['version']}"
        for name in ("vega", "vega-lite", "vega-embed")
    )
    scripts = "\n".join(f"<script>\n{(modules / build).read_text()}\n</script>" for build in BUILDS)
    print(f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>lossbench: dvc plots</title>
<!-- {versions}, inlined from their npm packages so this page renders offline
     (built by .dvc/plots/build_offline_page.py). Their license notices are at the end of the page. -->
{scripts}
<style>
  body {{ font-family: sans-serif; margin: 16px; }}
  table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
<!--
Third-party notices:

{notices(modules)}
-->
</body>
</html>""")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
