"""The report document model (sections, report, HTML/JSON rendering) every layer may use.

It sits below :mod:`conceptlens.vocab`, :mod:`conceptlens.concepts` and
:mod:`conceptlens.explain` so that their result objects can describe themselves as report
sections (``report_sections()``) without a lower layer importing the ``explain`` package.
The public home of these names is :mod:`conceptlens.explain.report`.
"""
