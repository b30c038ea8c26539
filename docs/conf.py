"""Sphinx configuration for the nlg documentation site (``make docs``).

The build needs no network: MathJax is loaded by the browser when a page is viewed, and nothing is
fetched at build time (no intersphinx). Notebooks are rendered by myst-nb without executing them
(``tests/test_notebooks.py`` executes them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import nlg  # noqa: E402

project = "nlg"
author = "the nlg developers"
copyright = "2025, the nlg developers"
release = nlg.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
root_doc = "index"

# Markdown (MyST): $…$ maths, heading anchors for in-page links, GitHub-style tables and images.
myst_enable_extensions = ["dollarmath", "colon_fence", "attrs_inline"]
myst_heading_anchors = 3

# Notebooks are shown as committed (without outputs); the tests execute them.
nb_execution_mode = "off"

# API reference from the docstrings (reStructuredText with Google-style "Args:" sections).
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Strict build (-W -n): references into third-party packages cannot resolve without intersphinx,
# which would need the network; everything inside nlg must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|diffusers|gr|transformers|numpy|np|PIL|matplotlib|gradio|accelerate|torchmetrics|sklearn|safetensors)(\..*)?"),
    (r"py:.*", r"(pathlib|typing|collections|random|dataclasses|os|enum|argparse|concurrent|json|threading|subprocess)\..*"),
    (r"py:class", r"(Tensor|Generator|Path|Image|Figure|Axes|ndarray|dtype|device)"),
    (r"py:class", r"nlg(\.\w+)*\.T"),  # TypeVars in signatures
]

html_theme = "furo"
html_title = f"nlg {release}"
html_static_path: list = []


# A name re-exported by a package (``nlg.refine_noise``, ``nlg.adapters.GuidanceAdapter``, or a bare
# ``training_batch`` inside ``nlg.training.batch``'s docstring) resolves to the entry of the same object
# under the name it is documented by, when the name itself has no entry.
def _locate(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _identity(obj):
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return None  # small constants are shared between unrelated names
    if type(obj).__name__ == "module":
        return ("module", obj.__name__)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return (module, qualname)
    return ("id", id(obj))


def _documented_names(app, env):
    cache = getattr(app, "_nlg_documented", None)  # on the app, not the pickled environment
    if cache is None:
        cache = {}
        for name in sorted(env.get_domain("py").objects):
            key = _identity(_locate(name)) if name.startswith("nlg") else None
            if key is not None:
                cache.setdefault(key, name)
        app._nlg_documented = cache
    return cache


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target:
        return None
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
        if cls:
            candidates.insert(0, f"{module}.{cls}.{target}")
    documented = _documented_names(app, env)
    for candidate in candidates:
        if not candidate.startswith("nlg"):
            continue
        key = _identity(_locate(candidate))
        name = documented.get(key) if key is not None else None
        if name and name != candidate:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
    return None


# The benchmarks page includes every benchmarks/results/*.md: those it does not include by name are
# appended when the page is read, each under its own title, its headings one level down.
def _append_results(app, docname, source):
    if docname != "benchmarks":
        return
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    extra = [p for p in results if f"../benchmarks/results/{p.name}" not in source[0]]
    for path in extra:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        title = first[2:].strip() if first.startswith("# ") else path.stem
        skip = 1 if first.startswith("# ") else 0
        source[0] += (
            f"\n## {title}\n\n```{{include}} ../benchmarks/results/{path.name}\n"
            f":start-line: {skip}\n:heading-offset: 1\n```\n"
        )


def setup(app):
    app.connect("missing-reference", _resolve_reexport)
    app.connect("source-read", _append_results)
