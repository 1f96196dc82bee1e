// Renders the site that Jupyter Book (mystmd) has built into static HTML pages.
//
// mystmd runs this as the template's `build.render` command, with CONTENT_CDN (its content server:
// /config.json, /content/<slug>.json and the site's files) and BUILD_DIRECTORY (where the HTML goes).
// BASE_URL (optional) is the path the site is served under, e.g. /ptft on GitHub Pages.
// Node's standard library only: nothing to install, works offline.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const CDN = process.env.CONTENT_CDN;
const OUT = process.env.BUILD_DIRECTORY;
const BASE = (process.env.BASE_URL || "").replace(/\/$/, "");
const HERE = dirname(fileURLToPath(import.meta.url));
if (!CDN || !OUT) {
  console.error("render.mjs: run by `jupyter-book build --html` (CONTENT_CDN and BUILD_DIRECTORY are not set).");
  process.exit(2);
}

const assets = new Set(); // files of the site (figures) that the pages use: copied at the end

async function getJson(path) {
  const response = await fetch(CDN + path);
  if (!response.ok) throw new Error(`render.mjs: ${CDN + path} answered ${response.status}`);
  return response.json();
}

const escape = (text) =>
  String(text ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const stripAnsi = (text) => String(text ?? "").replace(/\u001b\[[0-9;]*[A-Za-z]/g, "");
const slugToPath = (slug) => slug.replace(/\./g, "/");

function asset(path) {
  assets.add(path);
  return BASE + path;
}

const pageUrls = new Set(["/"]); // the pages' URL paths; any other site path is a file of the site

function href(url) {
  if (!url) return "#";
  if (/^[a-z]+:/i.test(url) || url.startsWith("#") || !url.startsWith("/")) return url;
  const [path, fragment] = url.split("#");
  if (pageUrls.has(path.replace(/\/$/, "") || "/")) return BASE + url;
  return asset(path) + (fragment ? `#${fragment}` : "");
}

function text(node) {
  if (node.value !== undefined) return String(node.value);
  return (node.children ?? []).map(text).join("");
}

function output(data) {
  const kind = data.output_type;
  if (kind === "stream") return `<pre class="output stream">${escape(stripAnsi(data.text))}</pre>`;
  if (kind === "error") return `<pre class="output error">${escape(stripAnsi((data.traceback ?? []).join("\n")))}</pre>`;
  const bundle = data.data ?? {};
  const alt = bundle["text/plain"]?.content ?? "";
  for (const mime of ["image/png", "image/jpeg", "image/svg+xml", "image/gif"]) {
    if (bundle[mime]?.path) return `<img class="output" src="${asset(bundle[mime].path)}" alt="${escape(alt)}">`;
  }
  if (bundle["text/html"]?.content) return `<div class="output html">${bundle["text/html"].content}</div>`;
  if (bundle["text/latex"]?.content) return `<pre class="output">${escape(bundle["text/latex"].content)}</pre>`;
  if (alt) return `<pre class="output">${escape(alt)}</pre>`;
  return "";
}

function render(node) {
  const inner = () => (node.children ?? []).map(render).join("");
  switch (node.type) {
    case "text": return escape(node.value);
    case "root": return inner();
    case "block": return `<div class="block ${escape(node.kind ?? "")}">${inner()}</div>`;
    case "paragraph": return `<p>${inner()}</p>`;
    case "heading": {
      const id = node.html_id ?? node.identifier;
      const anchor = id ? ` id="${escape(id)}"` : "";
      return `<h${node.depth}${anchor}>${inner()}</h${node.depth}>`;
    }
    case "emphasis": return `<em>${inner()}</em>`;
    case "strong": return `<strong>${inner()}</strong>`;
    case "superscript": return `<sup>${inner()}</sup>`;
    case "subscript": return `<sub>${inner()}</sub>`;
    case "delete": return `<del>${inner()}</del>`;
    case "break": return "<br>";
    case "thematicBreak": return "<hr>";
    case "inlineCode": return `<code>${escape(node.value)}</code>`;
    case "code": return `<pre class="code"><code class="language-${escape(node.lang ?? "")}">${escape(node.value)}</code></pre>`;
    case "inlineMath": return node.html ?? `<code class="math">${escape(node.value)}</code>`;
    case "math": return `<div class="math-display">${node.html ?? escape(node.value)}</div>`;
    case "link": return `<a href="${escape(href(node.url))}">${inner()}</a>`;
    case "crossReference": {
      const target = node.url ? href(node.url) + (node.html_id ? `#${node.html_id}` : "") : `#${node.html_id ?? ""}`;
      return `<a href="${escape(target)}">${inner()}</a>`;
    }
    case "image": return `<img src="${escape(href(node.url))}" alt="${escape(node.alt ?? "")}">`;
    case "list": {
      const tag = node.ordered ? "ol" : "ul";
      const start = node.ordered && node.start > 1 ? ` start="${node.start}"` : "";
      return `<${tag}${start}>${inner()}</${tag}>`;
    }
    case "listItem": return `<li>${inner()}</li>`;
    case "blockquote": return `<blockquote>${inner()}</blockquote>`;
    case "table": return `<table>${inner()}</table>`;
    case "tableRow": return `<tr>${inner()}</tr>`;
    case "tableCell": {
      const tag = node.header ? "th" : "td";
      const align = node.align ? ` style="text-align:${node.align}"` : "";
      return `<${tag}${align}>${inner()}</${tag}>`;
    }
    case "html": return node.value ?? "";
    case "outputs": return `<div class="outputs">${inner()}</div>`;
    case "output": return output(node.jupyter_data ?? {});
    case "admonition": return `<aside class="admonition ${escape(node.kind ?? "")}">${inner()}</aside>`;
    case "admonitionTitle": return `<p class="admonition-title">${inner()}</p>`;
    case "container": return `<figure>${inner()}</figure>`;
    case "caption": return `<figcaption>${inner()}</figcaption>`;
    case "comment": return "";
    default: return `<span class="${escape(node.type)}">${inner()}</span>`;
  }
}

function page({ title, body, nav, prev, next, siteTitle }) {
  const link = (p, label) => (p ? `<a class="${label}" href="${BASE}${p.url}">${escape(p.title)}</a>` : "<span></span>");
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · ${escape(siteTitle)}</title>
<link rel="stylesheet" href="${BASE}/ptft-site.css">
</head>
<body>
<nav class="toc" aria-label="Table of contents">
<p class="site-title"><a href="${BASE}/">${escape(siteTitle)}</a></p>
${nav}
</nav>
<main>
<article>
${body}
</article>
<nav class="pager" aria-label="Previous and next page">${link(prev, "prev")}${link(next, "next")}</nav>
</main>
</body>
</html>
`;
}

async function main() {
  const config = await getJson("/config.json");
  const project = config.projects[0];
  const siteTitle = config.title ?? project.title ?? "Site";
  const entries = [{ slug: project.index, url: "/", title: project.title ?? siteTitle, level: 1 }];
  const navItems = [];
  for (const p of project.pages) {
    if (p.slug) entries.push({ slug: p.slug, url: `/${slugToPath(p.slug)}/`, title: p.title, level: p.level });
  }
  for (const entry of entries) pageUrls.add(entry.url.replace(/\/$/, "") || "/");
  const contents = new Map();
  for (const entry of entries) {
    const content = await getJson(`/content/${entry.slug}.json`);
    entry.title = content.frontmatter?.title ?? entry.title;
    contents.set(entry.slug, content);
  }
  for (const p of [{ title: entries[0].title, slug: project.index, level: 1 }, ...project.pages]) {
    const entry = entries.find((e) => e.slug === p.slug);
    navItems.push(entry
      ? `<li class="level-${p.level ?? 1}"><a href="${BASE}${entry.url}">${escape(entry.title)}</a></li>`
      : `<li class="level-${p.level ?? 1} section">${escape(p.title)}</li>`);
  }
  const nav = `<ul>${navItems.join("\n")}</ul>`;
  entries.forEach((entry, i) => {
    const content = contents.get(entry.slug);
    let body = render(content.mdast);
    if (content.frontmatter?.content_includes_title === false || !/<h1[\s>]/.test(body)) {
      body = `<h1>${escape(entry.title)}</h1>\n${body}`;
    }
    const html = page({ title: entry.title, body, nav, prev: entries[i - 1], next: entries[i + 1], siteTitle });
    const file = join(OUT, entry.url, "index.html");
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, html);
  });
  for (const path of assets) {
    const response = await fetch(CDN + path);
    if (!response.ok) throw new Error(`render.mjs: the site's file ${path} is missing (${response.status})`);
    const file = join(OUT, path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, Buffer.from(await response.arrayBuffer()));
  }
  copyFileSync(join(HERE, "ptft-site.css"), join(OUT, "ptft-site.css"));
  console.log(`render.mjs: ${entries.length} pages and ${assets.size} files in ${OUT}`);
}

main().catch((error) => {
  console.error(error.message ?? error);
  process.exit(1);
});
