#!/bin/bash
# Interleaved side-by-side runs of the pipeline and gateway benches: another checkout's src (the
# previous commit, e.g. `git worktree add --detach /tmp/prev <commit>`) against this one's.
#   bash bench/compare_prev.sh /tmp/prev/src [rounds]
set -euo pipefail
prev="$1"
rounds="${2:-3}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
for round in $(seq "$rounds"); do
  echo "### round $round $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
  echo "## pipeline prev"; PYTHONPATH="$prev" python bench/pipeline.py --repeats 15 --photos 60 --inputs photo
  echo "## pipeline new"; PYTHONPATH="$here/src" python bench/pipeline.py --repeats 15 --photos 60 --inputs photo
  echo "## pipeline new --screening 0"
  PYTHONPATH="$here/src" python bench/pipeline.py --repeats 15 --photos 60 --inputs photo --screening 0
  echo "## gateway prev"; PYTHONPATH="$prev" python bench/gateway.py --only models --requests 60
  echo "## gateway new"; PYTHONPATH="$here/src" python bench/gateway.py --only models --requests 60
done
