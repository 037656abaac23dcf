#!/usr/bin/env bash
# The project's diagrams: regenerates docs/diagrams/package.puml from the code
# (hack/package-diagram.py) and renders every docs/diagrams/*.puml to an SVG next to it.
#
#   hack/diagrams.sh           # regenerate and render everything
#   hack/diagrams.sh --check   # change nothing; fail, naming each file, when a checked-in
#                              # SVG or generated .puml differs from what this would write
#
# Needs plantuml (Debian package `plantuml`, with graphviz) and python3. Rendering is offline
# and deterministic: the SVGs carry no metadata, comments or version strings, so the same
# sources give the same bytes. Fonts and layout come from Java and graphviz: the checked-in
# SVGs are made with Debian 12's plantuml 1.2020.02 and graphviz 2.42; other versions render
# differently and --check says so.
#
# docs/diagrams/cluster-example.puml is written by a unit test of `kea-operator diagram`
# (UPDATE_GOLDEN=1 cargo test -p kea-cli --lib diagram); the test keeps it current,
# this script renders it.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

DIAGRAMS=docs/diagrams
EXPECTED_PLANTUML=1.2020.02

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) sed -n '2,/^# shellcheck/{/^# shellcheck/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) die "unknown argument '$1': use no argument to render, or --check" ;;
esac

require_cmd plantuml "apt-get install plantuml"
require_cmd dot "apt-get install graphviz"
require_cmd python3 "apt-get install python3"

version=$(plantuml -version 2>/dev/null | sed -n 's/^PlantUML version \([^ ]*\).*/\1/p')
if [ "$version" != "$EXPECTED_PLANTUML" ]; then
  log "warning: plantuml $version, the SVGs are rendered with $EXPECTED_PLANTUML: expect layout differences"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The generated source.
python3 hack/package-diagram.py -o "$work/package.puml"

# 2. Every source, the generated one as generated now.
shopt -s nullglob
for source in "$DIAGRAMS"/*.puml; do
  [ "$(basename "$source")" = package.puml ] || cp "$source" "$work/"
done

# 3. One JVM for all of them. PlantUML writes a syntax error into the image and carries on,
#    so -failfast2 checks the syntax of every file first.
(cd "$work" && plantuml -tsvg -nometadata -failfast2 -charset UTF-8 ./*.puml) ||
  die "plantuml failed on one of $DIAGRAMS/*.puml"

# 4. Drop what plantuml embeds besides the drawing: XML comments (entity hashes, and the
#    source with the Java version when metadata is on).
for svg in "$work"/*.svg; do
  python3 - "$svg" <<'EOF'
import re, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as handle:
    text = handle.read()
text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
with open(path, "w", encoding="utf-8") as handle:
    handle.write(text.rstrip("\n") + "\n")
EOF
done

# 5. Compare with, or write to, docs/diagrams.
outputs=("$work/package.puml" "$work"/*.svg)
if $check; then
  stale=()
  for made in "${outputs[@]}"; do
    target="$DIAGRAMS/$(basename "$made")"
    cmp -s "$made" "$target" || stale+=("$target")
  done
  for svg in "$DIAGRAMS"/*.svg; do
    [ -e "${svg%.svg}.puml" ] || stale+=("$svg (no ${svg%.svg}.puml)")
  done
  if [ ${#stale[@]} -gt 0 ]; then
    for file in "${stale[@]}"; do log "out of date: $file"; done
    die "diagrams are out of date: run hack/diagrams.sh and commit the result"
  fi
  log "diagrams are up to date (${#outputs[@]} files)"
else
  for made in "${outputs[@]}"; do
    target="$DIAGRAMS/$(basename "$made")"
    if ! cmp -s "$made" "$target"; then
      cp "$made" "$target"
      log "wrote $target"
    fi
  done
  for svg in "$DIAGRAMS"/*.svg; do
    [ -e "${svg%.svg}.puml" ] || { rm "$svg"; log "removed $svg (its .puml is gone)"; }
  done
  log "diagrams rendered (${#outputs[@]} files)"
fi
