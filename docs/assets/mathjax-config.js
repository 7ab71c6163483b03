// MathJax 3 configuration for the pages' maths (pymdownx.arithmatex, generic mode: \( \) and \[ \]).
// MathJax itself is served from assets/mathjax/ (docs/hooks/site.py), never from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
