#!/usr/bin/env bash
# Checks deploy/grafana/sluice-dashboard.json and deploy/prometheus/*.yml:
#   - the dashboard is JSON of the expected shape (schema version, unique
#     panel ids, every query on the ${datasource} variable), and every
#     query is PromQL that parses (promtool check rules on the queries made
#     into recording rules, Grafana's variables replaced);
#   - every sluice_* metric the dashboard or the alerts use is documented in
#     docs/operations.md (so a renamed or misspelt metric cannot leave a
#     panel or an alert silently empty);
#   - promtool check rules, promtool test rules and promtool check config
#     pass.
# Run by `bazel test //tests/deploy:deploy_config_test`, or by hand from the
# repository root.
set -euo pipefail

root=""
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="${TEST_SRCDIR}/${TEST_WORKSPACE:-sluice}"
fi
if [[ -z "${root}" || ! -d "${root}/deploy" ]]; then
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fi
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
dashboard="${root}/deploy/grafana/sluice-dashboard.json"
prom="${root}/deploy/prometheus"
failed=0

step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; failed=1; }

step "json.tool ${dashboard#${root}/}"
/usr/bin/python3 -m json.tool "${dashboard}" > /dev/null || fail "the dashboard is not JSON"

step "dashboard shape; its queries as recording rules"
/usr/bin/python3 - "${dashboard}" "${tmp}/dashboard_queries.yml" "${tmp}/dashboard_metrics.txt" <<'PY' || fail "the dashboard's shape"
import json, re, sys
dashboard = json.load(open(sys.argv[1]))
errors = []
if not 36 <= dashboard.get("schemaVersion", 0) <= 39:
    errors.append("schemaVersion %r, expected 36..39" % dashboard.get("schemaVersion"))
for key in ("title", "uid", "panels", "templating"):
    if key not in dashboard:
        errors.append("no %r" % key)
variables = {v["name"]: v for v in dashboard["templating"]["list"]}
if variables.get("datasource", {}).get("type") != "datasource":
    errors.append("no `datasource` template variable of type datasource")
ids, queries = set(), []
for panel in dashboard["panels"]:
    title = panel.get("title", "?")
    if panel.get("id") in ids:
        errors.append("panel %r: id %r used twice" % (title, panel.get("id")))
    ids.add(panel.get("id"))
    if not {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})):
        errors.append("panel %r: gridPos lacks h, w, x or y" % title)
    if panel["type"] == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        errors.append("panel %r: datasource is not ${datasource}" % title)
    if not panel.get("targets"):
        errors.append("panel %r: no queries" % title)
    for target in panel.get("targets", []):
        if target.get("datasource", {}).get("uid") != "${datasource}":
            errors.append("panel %r, query %s: datasource is not ${datasource}" % (title, target.get("refId")))
        queries.append((title, target["expr"]))
# Grafana's variables, as Grafana would replace them.
def concrete(expr):
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, expr) in enumerate(queries):
        if "$" in concrete(expr):
            errors.append("panel %r: unknown variable in %s" % (title, expr))
        out.write("      - record: dashboard:query_%d\n        expr: %s\n" % (i, json.dumps(concrete(expr))))
with open(sys.argv[3], "w") as out:
    for title, expr in queries:
        for name in re.findall(r"\bsluice_[a-z0-9_]+", expr):
            out.write("%s\t%s\n" % (name, title))
for e in errors:
    print(e, file=sys.stderr)
print("%d panels, %d queries" % (len(ids), len(queries)))
sys.exit(1 if errors else 0)
PY
promtool check rules "${tmp}/dashboard_queries.yml" || fail "a dashboard query does not parse"

step "metrics used are documented in docs/operations.md"
# (A name followed by "*" is a pattern in prose, not a metric.)
grep -oP '\bsluice_[a-z0-9_]+\b(?!\*)' "${prom}/alerts.yml" | sed 's/$/\talerts.yml/' \
  >> "${tmp}/dashboard_metrics.txt"
while IFS=$'\t' read -r name where; do
  family="$(sed -E 's/_(bucket|sum|count)$//' <<< "${name}")"
  if ! grep -qw -- "${family}" "${root}/docs/operations.md"; then
    fail "${where}: ${name} is not in docs/operations.md"
  fi
done < <(sort -u "${tmp}/dashboard_metrics.txt")

step "promtool check rules alerts.yml"
promtool check rules "${prom}/alerts.yml" || fail "alerts.yml"
step "promtool test rules alerts_test.yml"
(cd "${prom}" && promtool test rules alerts_test.yml) || fail "alerts_test.yml"
step "promtool check config prometheus.yml"
# promtool checks that the files it names exist: the proxies' admin token
# (a Secret mounted in the Prometheus pod) is replaced by a file here.
mkdir -p "${tmp}/prometheus"
cp "${prom}/alerts.yml" "${tmp}/prometheus/"
echo "a-token-for-promtool" > "${tmp}/token"
sed "s|credentials_file: /etc/prometheus/secrets/sluice-proxy-admin-token/token|credentials_file: ${tmp}/token|" \
  "${prom}/prometheus.yml" > "${tmp}/prometheus/prometheus.yml"
(cd "${tmp}/prometheus" && promtool check config prometheus.yml) || fail "prometheus.yml"

if [[ ${failed} -ne 0 ]]; then
  echo "deploy config checks FAILED" >&2
  exit 1
fi
echo "deploy config checks passed"
