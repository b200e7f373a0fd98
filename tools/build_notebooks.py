"""Write the tutorial notebooks in ``notebooks/`` (outputs stripped) from the cells below.

Run ``python tools/build_notebooks.py`` after editing; CI executes notebooks 01-04.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """\
%matplotlib inline
import numpy as np
import pandas as pd

from conceptlens.demo import generate
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary

backbone = load_backbone("demo", device="cpu")
vocabulary = ConceptVocabulary.builtin("demo")
data = generate(240, seed=11, size=backbone.image_size[0], artifact_correlation=0.7)
images = {f"img_{i:03d}": image for i, image in enumerate(data.images)}
concept_labels = pd.DataFrame(data.concepts, index=list(images), columns=data.concept_ids)
diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
scorer = ConceptScorer(backbone, vocabulary, mode="combined", calibration="sigmoid", progress=False)
scores = scorer.score(images)
backbone"""

# notebook 04 plants a stronger shortcut (the ink marking follows the diagnosis in 90% of images)
SETUP_04 = SETUP.replace("artifact_correlation=0.7", "artifact_correlation=0.9")

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_zero_shot_concept_annotation.ipynb": [
        ("md", "# 01 Zero-shot concept annotation and concept maps\n\n"
               "Score images against a concept vocabulary with the model's global *and* local "
               "(patch-level) alignment, check the scores against ground truth, and look at where "
               "each concept was seen. Runs offline on the demo model (trained on synthetic "
               "dermoscopy images; **not for clinical use**)."),
        ("code", SETUP),
        ("md", "The vocabulary is data: ids, names, synonyms, groups, sources."),
        ("code", "vocabulary"),
        ("md", "One image pass scores every concept; the table is labelled (rows = images, columns = concept ids)."),
        ("code", "scores"),
        ("md", "Zero-shot annotation quality against the generator's ground truth (ROC-AUC, AP, bootstrap CIs, pooled)."),
        ("code", "from conceptlens.vocab import evaluate_annotation\n\n"
                 "annotation = evaluate_annotation(scores, concept_labels, n_bootstrap=200)\n"
                 "annotation[['name', 'n_pos', 'roc_auc', 'roc_auc_low', 'roc_auc_high', 'average_precision']]"),
        ("code", "from conceptlens.explain import plot_roc_curves\n\n"
                 "plot_roc_curves(scores, concept_labels);"),
        ("md", "Concept maps: the patch-level scores of every concept from one forward pass, drawn on the image."),
        ("code", "i = int(np.argmax(data.concepts[:, :3].sum(axis=1)))\n"
                 "maps = scorer.concept_maps(data.images[i])\n"
                 "print('present:', [c for c, v in zip(data.concept_ids, data.concepts[i]) if v])\n"
                 "maps"),
        ("code", "from conceptlens.explain import plot_concept_maps\n\nplot_concept_maps(maps, ncols=4);"),
        ("md", "Pointing game: does each present concept's map peak inside its ground-truth mask?"),
        ("code", "from conceptlens.explain.metrics import pointing_game\n\n"
                 "hits = {}\n"
                 "for c, concept_id in enumerate(data.concept_ids[:7]):\n"
                 "    positives = np.flatnonzero(data.concepts[:40, c])\n"
                 "    hits[concept_id] = np.mean([\n"
                 "        pointing_game(scorer.concept_maps(data.images[j], concepts=[concept_id]).upsampled(concept_id),\n"
                 "                      data.masks[j, c]) for j in positives])\n"
                 "pd.Series(hits, name='pointing game hit rate')"),
        ("md", "Zero-shot classification and retrieval, the model's own uses."),
        ("code", "from conceptlens.vocab import retrieve_images, zero_shot_classify\n\n"
                 "probs = zero_shot_classify(backbone, list(data.images[:6]), ['blue-whitish veil', 'regression structures'],\n"
                 "                           templates=['This is dermatoscopy of {}.'])\n"
                 "probs"),
        ("code", "retrieve_images(scores, 'derm7pt:blue_whitish_veil', k=5)"),
    ],
    "02_concept_bottleneck_and_interventions.ipynb": [
        ("md", "# 02 Concept bottleneck and interventions\n\n"
               "A sparse linear map from concept scores to the diagnosis that a clinician can read, "
               "with per-concept contributions and test-time interventions."),
        ("code", SETUP),
        ("code", "from conceptlens.concepts import SparseLinearBottleneck\n\n"
                 "criteria = [c for c in scores.concept_ids if not c.startswith('artifact:')]\n"
                 "X = scores.table[criteria]\n"
                 "train, test = slice(0, 160), slice(160, None)\n"
                 "model = SparseLinearBottleneck(cv=3).fit(X.iloc[train], diagnosis[train])\n"
                 "print('test accuracy', (model.predict(X.iloc[test]) == diagnosis[test]).mean())\n"
                 "model"),
        ("md", "The weights, labelled by concept (the 7-point checklist gives the major criteria twice the weight)."),
        ("code", "model.coef_frame(standardized=True).T.sort_values(model.coef_frame().index[0])"),
        ("code", "from conceptlens.explain import plot_weights\n\nplot_weights(model);"),
        ("md", "Contributions of each concept to one decision; they add up to the decision value exactly."),
        ("code", "contrib = model.contributions(X.iloc[test])\n"
                 "np.testing.assert_allclose(contrib.decision[:, 0], model.decision_function(X.iloc[test]))\n"
                 "contrib.for_class('melanoma').iloc[0].sort_values()"),
        ("code", "from conceptlens.explain import plot_concept_bars\n\n"
                 "plot_concept_bars(contrib.for_class('melanoma').iloc[0], names=scores.concept_names);"),
        ("md", "Intervene: set a concept to a value and see how the decision moves."),
        ("code", "row = X.iloc[test].iloc[[0]]\n"
                 "result = model.intervene(row, {'derm7pt:blue_whitish_veil': float(X['derm7pt:blue_whitish_veil'].max())})\n"
                 "result"),
        ("md", "Intervention curves: accuracy as true concept values replace predicted ones, k = 0..K."),
        ("code", "from conceptlens.concepts import intervention_curve\n"
                 "from conceptlens.explain import plot_intervention_curves\n\n"
                 "true_values = X.iloc[test].copy()\n"
                 "pos = X.iloc[train].quantile(0.95)\n"
                 "neg = X.iloc[train].quantile(0.05)\n"
                 "truth = concept_labels[criteria].iloc[test]\n"
                 "true_values[:] = np.where(truth.to_numpy() == 1, pos.to_numpy(), neg.to_numpy())\n"
                 "curves = pd.concat([intervention_curve(model, X.iloc[test], true_values, diagnosis[test], policy=p)\n"
                 "                    for p in ('random', 'uncertainty', 'importance')])\n"
                 "plot_intervention_curves(curves);"),
    ],
    "03_attributions_and_faithfulness.ipynb": [
        ("md", "# 03 Attributions and faithfulness checks\n\n"
               "Pixel attributions (captum) through the whole chain, and checks that they are faithful "
               "to the model."),
        ("code", SETUP),
        ("code", "from conceptlens.concepts import SparseLinearBottleneck\n"
                 "from conceptlens.explain import ClassTarget, ConceptTarget, attribute\n\n"
                 "model = SparseLinearBottleneck(cv=3).fit(scores.table, diagnosis)\n"
                 "i = int(np.flatnonzero(data.concepts[:, 1])[0])  # an image with a blue-whitish veil\n"
                 "ig = attribute(scorer, data.images[i], target=ConceptTarget('derm7pt:blue_whitish_veil'),\n"
                 "               method='integrated_gradients', n_steps=32, internal_batch_size=8)\n"
                 "ig"),
        ("code", "ig.plot(mask=data.masks[i, 1]);"),
        ("md", "The same pixels, explaining the bottleneck's melanoma logit (pixels -> concepts -> class)."),
        ("code", "cls = attribute(scorer, data.images[i], target=ClassTarget('melanoma'), method='integrated_gradients',\n"
                 "                bottleneck=model, n_steps=32, internal_batch_size=8)\n"
                 "cam = attribute(scorer, data.images[i], target=ConceptTarget('derm7pt:blue_whitish_veil'),\n"
                 "                method='grad_cam')\n"
                 "cls.plot(); cam.plot();"),
        ("md", "Faithfulness: IG completeness, deletion/insertion curves, pointing game, randomisation check."),
        ("code", "from conceptlens.explain import metrics\n\n"
                 "print('IG convergence delta', ig.convergence_delta)\n"
                 "deletion = metrics.deletion_curve(ig.forward, ig.pixel_values, ig.raw.sum(0), steps=16, baseline='blur')\n"
                 "insertion = metrics.insertion_curve(ig.forward, ig.pixel_values, ig.raw.sum(0), steps=16, baseline='blur')\n"
                 "print('deletion AUC', deletion.auc, 'insertion AUC', insertion.auc)\n"
                 "print('pointing game', metrics.pointing_game(ig.map, data.masks[i, 1]))\n"
                 "print('map AUROC', metrics.map_auroc(ig.map, data.masks[i, 1]))"),
        ("code", "from conceptlens.explain import plot_deletion_insertion\n\n"
                 "plot_deletion_insertion([deletion, insertion]);"),
    ],
    "04_auditing_a_model.ipynb": [
        ("md", "# 04 Auditing a model\n"
               "\n"
               "Which concepts explain a decision-maker's decisions, and is it leaning on something it should not? The demo data plant an ink marking that follows the diagnosis (here in 90 % of images); a classifier trained on it learns the shortcut, and the audit should say so — with the test that decided, and the evidence shown below."),
        ("code", SETUP_04),
        ("code", "import dataclasses\n"
                 "\n"
                 "from conceptlens.concepts import SparseLinearBottleneck, audit\n"
                 "\n"
                 "train, test = slice(0, 160), slice(160, None)\n"
                 "shortcut = SparseLinearBottleneck(cv=3).fit(scores.table.iloc[train], diagnosis[train])\n"
                 "decisions = shortcut.predict(scores.table.iloc[test])\n"
                 "test_scores = dataclasses.replace(scores, table=scores.table.iloc[test])  # names kept\n"
                 "result = audit(test_scores, decisions, diagnosis[test],\n"
                 "               irrelevant_concepts=['artifact:ink_marking'])\n"
                 "result"),
        ("md", "Findings first: the summary the audit report opens with (each flag names its test; the fidelity interval says how well a sparse concept surrogate reproduces the decisions)."),
        ("code", "from conceptlens.explain.report import audit_report\n"
                 "\n"
                 "test_ids = scores.image_ids[160:]\n"
                 "report = audit_report(result, scores=test_scores, decisions=decisions,\n"
                 "                      labels=diagnosis[test], images={k: images[k] for k in test_ids})\n"
                 "report.summary"),
        ("md", "Reliance: how much the surrogate of the decisions leans on each concept (standardised weight). The concept declared irrelevant is drawn in orange."),
        ("code", "import matplotlib.pyplot as plt\n"
                 "\n"
                 "reliance = result.reliance.sort_values('importance')\n"
                 "colours = ['#d55e00' if m == 'irrelevant' else '#0072b2' for m in reliance['marked']]\n"
                 "fig, ax = plt.subplots(figsize=(6, 3.5))\n"
                 "ax.barh(reliance['name'], reliance['importance'], color=colours)\n"
                 "ax.set_xlabel('reliance of the surrogate (|standardised weight|)')\n"
                 "ax.set_title('What the decisions rely on');"),
        ("md", "The flagged concept's evidence. First the test that flagged it: a likelihood-ratio test of whether the ink marking predicts the decisions *beyond the true labels*."),
        ("code", "result.spurious[['name', 'test', 'statistic', 'p_value', 'q_value', 'flagged', 'reason']]"),
        ("md", "Then the data: the ink-marking score splits the decisions far more cleanly than it splits the true labels — the classifier decides by the marking where the diagnosis says otherwise."),
        ("code", "ink = scores.table.iloc[test]['artifact:ink_marking'].to_numpy()\n"
                 "fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)\n"
                 "for ax, groups, what in [(axes[0], decisions, 'decision'), (axes[1], diagnosis[test], 'true label')]:\n"
                 "    for cls, colour in [('benign', '#0072b2'), ('melanoma', '#d55e00')]:\n"
                 "        ax.hist(ink[groups == cls], bins=15, range=(0, 1), alpha=.6, color=colour, label=cls)\n"
                 "    ax.set_title(f'ink-marking score by {what}'); ax.set_xlabel('concept score'); ax.legend()\n"
                 "pd.crosstab(pd.Series(ink > 0.5, name='ink marking seen'),\n"
                 "            [pd.Series(decisions, name='decision'), pd.Series(diagnosis[test], name='label')])"),
        ("md", "The images behind the flag: the test images where the decision disagrees with the label, with their ink-marking score."),
        ("code", "wrong = np.flatnonzero(decisions != diagnosis[test])[:6]\n"
                 "fig, axes = plt.subplots(1, max(len(wrong), 1), figsize=(2.2 * max(len(wrong), 1), 2.6), squeeze=False)\n"
                 "for ax, j in zip(axes[0], wrong):\n"
                 "    ax.imshow(images[test_ids[j]]); ax.axis('off')\n"
                 "    ax.set_title(f'decided {decisions[j]}\\nlabel {diagnosis[test][j]}\\nink {ink[j]:.2f}', fontsize=8)"),
        ("md", "Concepts enriched among the errors (false positives / negatives against the labels)."),
        ("code", "result.errors.head(6)"),
        ("md", "All of it in one self-contained HTML file plus its JSON twin, to share."),
        ("code", "import tempfile\n"
                 "\n"
                 "html_path, json_path = report.save(tempfile.mkdtemp(), 'audit')\n"
                 "print(html_path.name, html_path.stat().st_size // 1024, 'KiB;', json_path.name)"),
    ],
    "05_loading_real_conceptclip.ipynb": [
        ("md", "# 05 Loading the real ConceptCLIP (not executed in CI)\n\n"
               "The released weights live on the Hugging Face hub as `JerrryNie/ConceptCLIP` "
               "(gated: accept the terms on the model page and pass a token). Loading runs the "
               "repository's own code, so you must opt in with `trust_remote_code=True`. "
               "This notebook needs network access and about 2.2 GB of disk; it is shown, not run, here."),
        ("code", "from conceptlens.models import load_backbone\n"
                 "from conceptlens.vocab import ConceptScorer, ConceptVocabulary\n\n"
                 "backbone = load_backbone('conceptclip', trust_remote_code=True, token=None,  # or token='hf_...'\n"
                 "                         dtype='bfloat16')\n"
                 "backbone"),
        ("code", "vocabulary = ConceptVocabulary.builtin('dermoscopy')\n"
                 "scorer = ConceptScorer.from_preset('derm7pt', backbone, vocabulary, cache_dir='feature-cache')\n"
                 "scores = scorer.score('path/to/derm7pt/images')  # a folder, a CSV manifest, or a list of files\n"
                 "scores"),
        ("code", "maps = scorer.concept_maps('path/to/derm7pt/images/example.jpg')\nmaps"),
    ],
}


def build() -> list[Path]:
    ROOT.mkdir(exist_ok=True)
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        for i, cell in enumerate(nb.cells):  # stable ids keep regenerated notebooks diff-free
            cell.id = f"cell-{i:02d}"
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = ROOT / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print(path)
