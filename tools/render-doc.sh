#!/bin/sh
# Render one of the project's Markdown documents as the page gate-bridge
# serve carries for it:
#   tools/render-doc.sh SOURCE.md OUTPUT.html SERVED...
# SOURCE.md is a path from the top of the tree (README.md,
# docs/runbooks/rerun_eval.md); serve answers it at /SOURCE.md, so the
# document's relative links work as they do in the tree.  SERVED are the
# paths serve carries: a relative link to any other file of the tree keeps
# its text and loses its link (serve has no such page).
#
# The page uses the dashboard's colours (app.css) and its own layout (docs.css).
#
# cmark-gfm renders GitHub's Markdown (tables, autolinks) in its safe mode:
# raw HTML and javascript: links are left out.  Headings get the ids GitHub
# gives them (lower case, punctuation dropped, spaces as hyphens, -1, -2 for
# repeats), so that links to #a-heading land.
set -eu
src=$1
out=$2
shift 2
served=" $* "

# from the page back to the top of the tree: "" for README.md, "../../"
# for docs/runbooks/x.md
dir=$(dirname "$src")
root=
if [ "$dir" != . ]; then
	root=$(printf '%s\n' "$dir" | sed -e 's|[^/][^/]*|..|g' -e 's|$|/|')
fi

if ! command -v cmark-gfm >/dev/null 2>&1; then
	echo "$0: cmark-gfm is needed to build the runbook pages of gate-bridge serve (Debian: apt-get install cmark-gfm)" >&2
	exit 1
fi

tmp=$out.tmp
cmark-gfm --validate-utf8 -e table -e autolink -e strikethrough -e tagfilter "$src" >"$tmp.body"
awk -v dir="$dir" -v served="$served" -v root="$root" -v src="$src" '
function slug(s,   t) {
	t = s
	gsub(/<[^>]*>/, "", t)
	gsub(/&[A-Za-z]+;|&#[0-9]+;|&#[xX][0-9A-Fa-f]+;/, "", t)
	t = tolower(t)
	gsub(/[^a-z0-9 _-]/, "", t)
	gsub(/ /, "-", t)
	return t
}
# the path from the top of the tree of a relative link of this page
function resolve(href,   p, n, parts, i, k, outp, o) {
	p = (dir == "." ? "" : dir "/") href
	n = split(p, parts, "/")
	k = 0
	for (i = 1; i <= n; i++) {
		if (parts[i] == "" || parts[i] == ".")
			continue
		if (parts[i] == "..") {
			if (k > 0) k--
			continue
		}
		outp[++k] = parts[i]
	}
	o = ""
	for (i = 1; i <= k; i++)
		o = o (i > 1 ? "/" : "") outp[i]
	return o
}
# each <a href="..."> of a line: relative links to pages serve does not
# carry lose their link
function links(line,   res, pre, tag, href, path, rest, cl) {
	res = ""
	while (match(line, /<a href="[^"]*"[^>]*>/)) {
		pre = substr(line, 1, RSTART - 1)
		tag = substr(line, RSTART, RLENGTH)
		line = substr(line, RSTART + RLENGTH)
		href = tag
		sub(/^<a href="/, "", href)
		sub(/".*$/, "", href)
		if (href ~ /^(#|[A-Za-z][A-Za-z0-9+.-]*:)/ || href == "") {
			res = res pre tag
			continue
		}
		path = href
		sub(/#.*$/, "", path)
		path = resolve(path)
		if (index(served, " " path " ") > 0) {
			res = res pre tag
			continue
		}
		# drop this link: its text stays, its closing tag goes
		cl = index(line, "</a>")
		if (cl == 0) {
			res = res pre tag
			continue
		}
		res = res pre substr(line, 1, cl - 1)
		line = substr(line, cl + 4)
	}
	return res line
}
{
	line = links($0)
	if (match(line, /^<h[1-6]>.*<\/h[1-6]>$/)) {
		lvl = substr(line, 3, 1)
		inner = line
		sub(/^<h[1-6]>/, "", inner)
		sub(/<\/h[1-6]>$/, "", inner)
		id = slug(inner)
		if (id in seen)
			id = id "-" seen[id]++
		else
			seen[id] = 1
		if (title == "" && lvl == "1") {
			title = inner
			gsub(/<[^>]*>/, "", title)
		}
		line = "<h" lvl " id=\"" id "\"><a class=\"anchor\" href=\"#" id "\" aria-hidden=\"true\">#</a>" inner "</h" lvl ">"
	}
	body[++nbody] = line
}
END {
	if (title == "")
		title = src
	print "<!doctype html>"
	print "<html lang=\"en\">"
	print "<head>"
	print "<meta charset=\"utf-8\">"
	print "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	print "<meta name=\"color-scheme\" content=\"dark light\">"
	print "<title>" title " — gate_bridge</title>"
	print "<link rel=\"icon\" href=\"" root "favicon.svg\" type=\"image/svg+xml\">"
	print "<link rel=\"stylesheet\" href=\"" root "app.css\">"
	print "<link rel=\"stylesheet\" href=\"" root "docs.css\">"
	print "</head>"
	print "<body>"
	print "<nav class=\"doc-nav\" aria-label=\"gate_bridge\">"
	print "<a class=\"brand\" href=\"" (root == "" ? "./" : root) "\"><img src=\"" root "favicon.svg\" alt=\"\" width=\"18\" height=\"18\"> gate_bridge</a>"
	print "<a href=\"" (root == "" ? "./" : root) "\">Incidents</a>"
	print "<a href=\"" root "docs/runbooks/README.md\">Runbooks</a>"
	print "<a href=\"" root "README.md\">Reference</a>"
	print "<span class=\"doc-src\">" src "</span>"
	print "</nav>"
	print "<main class=\"doc\">"
	for (i = 1; i <= nbody; i++)
		print body[i]
	print "</main>"
	print "</body>"
	print "</html>"
}' "$tmp.body" >"$tmp"
rm -f "$tmp.body"
mv "$tmp" "$out"
