#!/usr/bin/env bash
# The scheduled check against dependency drift: install evolve with every dependency upgraded to its newest release
# (--upgrade --upgrade-strategy eager, in a fresh virtual environment), print what was resolved, run the suite.
# Run it weekly (cron, a CI schedule) to learn about a breaking release before a new user does.
#   bench/upgrade_check.sh                 newest releases, the default suite (-m "not slow")
#   bench/upgrade_check.sh --pre           pre-releases too
#   bench/upgrade_check.sh -- -m ""        any pytest arguments after --, here the whole suite
#   KEEP_VENV=/path bench/upgrade_check.sh keep the environment there (to reproduce a failure)
set -euo pipefail
cd "$(dirname "$0")/.."

pre=()
pytest_args=(-m "not slow")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pre) pre=(--pre); shift ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "usage: $0 [--pre] [-- pytest arguments]" >&2; exit 2 ;;
  esac
done

export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ -n ${KEEP_VENV:-} ]]; then
  venv="$KEEP_VENV"
  rm -rf "$venv"
else
  venv="$(mktemp -d "${TMPDIR:-/tmp}/evolve-upgrade.XXXXXX")"
  trap 'rm -rf "$venv"' EXIT
fi
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q --upgrade --upgrade-strategy eager "${pre[@]}" -e ".[test]"
echo "upgrade check: $(python --version), resolved:"
python -m pip freeze --exclude-editable | sort | tee "$venv/resolved.txt" | sed 's/^/  /'
python -m pytest -p no:cacheprovider "${pytest_args[@]}"
echo "upgrade check: passed with the releases above"
