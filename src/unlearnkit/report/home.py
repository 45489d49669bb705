"""The deployment home as pages a person reads: the ledger, and one page per certificate.

`write_home_html(ledger, certificates, out)` takes what `unlearnkit.requests` returns (the ledger's
public rows, the certificates' JSON) and renders it; it never reads the ledger or recomputes a check.
The ledger page is `out`, with the home's versions and the utility measured on each; each certificate is `<out stem>-certificates/<request id>.html`, linked
from its row. Like the run report: self-contained, no script from outside, no URL.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from jinja2 import Environment

from .. import runinfo
from ..requests.certificate import significance

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.pass{color:#1a7f37}.fail{color:#b42318}code{font-size:.9em}"""

LEDGER = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style></head><body>
<h1>{{ title }}</h1>
<p>{{ rows|length }} request(s). Names and facts are not shown: a verified request keeps only a salted
hash of the person, counts and metrics (docs/requests.md).</p>
<table id="ledger"><thead><tr><th>request</th><th>status</th><th>person (salted hash)</th><th>received</th>
<th>guarded</th><th>verified</th><th>batch</th><th>facts / inventory</th><th>failure</th><th>certificate</th></tr></thead><tbody>
{% for r in rows %}<tr class="request"><td><code>{{ r.id }}</code></td><td class="{{ 'pass' if r.status == 'verified' else 'fail' if r.status == 'failed' else '' }}">{{ r.status }}</td>
<td><code>{{ (r.person_hash or '')[:16] }}</code></td><td>{{ r.received_at|when }}</td><td>{{ r.guarded_at|when }}</td>
<td>{{ r.verified_at|when }}</td><td>{{ r.batch or '' }}</td><td>{{ r.counts.get('facts', 0) }} / {{ r.counts.get('inventory', '–') }}</td>
<td>{{ r.failure or '' }}</td><td>{% if r.id in pages %}<a href="{{ pages[r.id] }}">certificate</a>{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% if versions %}<h2>Versions</h2>
<p>Utility: x the base model's, on the home's utility slice, measured by the check of the batch that
made each version. Every deletion costs some; the floor a batch must keep is {{ floor|num }}x.</p>
<table id="versions"><thead><tr><th>version</th><th>parent</th><th>created</th><th>batch</th><th>requests</th>
<th>outcome</th><th>utility</th></tr></thead><tbody>
{% for v in versions %}<tr class="version"><td>{{ v.name }}{{ ' (current)' if v.current }}{{ ' (pruned)' if v.pruned }}</td>
<td>{{ v.parent or '–' }}</td><td>{{ v.created|when }}</td><td>{{ v.batch or '–' }}</td><td>{{ v.requests }}</td>
<td class="{{ 'pass' if v.deployed else 'fail' if v.stage == 'rejected' else '' }}">{{ v.outcome or '–' }}</td>
<td>{{ v.utility|num }}</td></tr>
{% endfor %}</tbody></table>{% endif %}</body></html>"""

CERTIFICATE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Certificate {{ c.request_id }}</title>
<style>{{ style }}</style></head><body>
<h1>Certificate {{ c.request_id }}</h1>
<p class="{{ 'pass' if c.passed else 'fail' }}">{{ 'Every check passed.' if c.passed else 'Not every check passed.' }}</p>
<table><tbody>
<tr><th>person (salted hash)</th><td><code>{{ c.person_sha256 }}</code><br>{{ c.person_hash_scheme }}</td></tr>
<tr><th>received / guarded / verified</th><td>{{ c.received_at|when }} / {{ c.guarded_at|when }} / {{ c.verified_at|when }}</td></tr>
<tr><th>batch</th><td>{{ c.batch }}</td></tr>
{% for side in ('before', 'after') %}{% set v = c.versions[side] %}<tr><th>model {{ side }}</th><td>{{ v.name }}:
{% for k, x in v.items() if k != 'name' %}{{ k }} <code>{{ x }}</code> {% endfor %}</td></tr>{% endfor %}
<tr><th>method</th><td><code>{{ c.method|tojson }}</code></td></tr>
<tr><th>inventory</th><td>{% for k, x in c.inventory.items() %}{{ k }}: {{ x }} {% endfor %}</td></tr>
<tr><th>signature</th><td>{% if c.signature %}{{ c.signature.alg }} by the home's key <code>{{ c.signature.public_key }}</code>
(<code>unlearn request certificate-check {{ c.request_id }}.json --public-key KEY</code> checks it){% else %}none
(written before certificates were signed){% endif %}</td></tr>
</tbody></table>
<h2>Checks</h2>
<table id="checks"><thead><tr><th>check</th><th>value</th><th>threshold</th><th>significance</th><th>passed</th></tr></thead><tbody>
{% for k in c.checks %}<tr class="check"><td>{{ k.check }}</td><td>{{ k.value|num }}</td><td>{{ k.threshold|num }}</td>
<td>{{ k|significance or '–' }}</td>
<td class="{{ 'pass' if k.passed else 'fail' }}">{{ 'yes' if k.passed else 'no' }}</td></tr>{% endfor %}
</tbody></table><p><a href="{{ back }}">back to the ledger</a></p></body></html>"""


def _env() -> Environment:
    env = Environment(autoescape=True)
    env.filters["significance"] = significance
    env.filters["when"] = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "–"
    env.filters["num"] = lambda x: f"{x:.4g}" if isinstance(x, float) else ("–" if x is None else x)
    return env


def write_home_html(ledger: list[dict], certificates: dict[str, dict], out: str | os.PathLike,
                    title: str = "Forget requests", versions: list[dict] | None = None,
                    floor: float | None = None) -> Path:
    """Write the ledger page to `out` (with the versions and their utility, `requests.versions`, when
    given) and one page per certificate beside it; returns `out`."""
    out = Path(out)
    folder = out.with_name(out.stem + "-certificates")
    env = _env()
    pages = {}
    for rid, cert in certificates.items():
        page = env.from_string(CERTIFICATE).render(c=cert, style=STYLE, back=os.path.relpath(out, folder))
        runinfo.write_text(folder / f"{rid}.html", page)
        pages[rid] = f"{folder.name}/{rid}.html"
    html = env.from_string(LEDGER).render(rows=ledger, pages=pages, style=STYLE, title=title, versions=versions,
                                          floor=floor)
    if "://" in html or any("://" in (folder / f"{r}.html").read_text() for r in certificates):
        raise ValueError("the home report would hold a URL")
    return runinfo.write_text(out, html)
