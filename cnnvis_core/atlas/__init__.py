"""The unit atlas: every channel of chosen layers on its own page, with what excites it in a data set.

Built from a finished dataset-examples result (:func:`cnnvis_core.jobs.dataset_examples`) and,
where pictures need it, the model::

    from cnnvis_core import atlas, jobs
    result = jobs.load("results/ex")
    table = atlas.unit_table(result, "features.relu7")        # peak, mean, selectivity, dead
    table.order("selectivity", dead=False)                    # channels, most selective first
    maps = atlas.unit_maps(engine, result, "features.relu7", [12])   # one forward pass
    atlas.unit_examples(result, "features.relu7", 12, maps)   # crops with the channel's map over them
    result.histogram("features.relu7", 12)                    # the channel's peak per image, binned
    atlas.kernel_slices(engine, "features.relu7", 12)         # the filter of the conv behind it
    atlas.logit_view(engine, "features.relu7", 12)            # the classes it raises and lowers
    atlas.projections(engine, result, "features.relu7", 12)   # deconvnet view of each top example
    atlas.export(result, "site/", core=engine)                # static HTML + PNG

Command line: ``python -m cnnvis_core.jobs atlas --result DIR --out SITE [--layers …]``.
"""

from .crops import Images, UnitExample, heat_over_box, mosaic, unit_examples, unit_maps
from .export import ExportReport, export, slug
from .kernels import kernel_slices, source_conv
from .logits import ClassWeight, LogitView, classifier_of, logit_view
from .projections import projections
from .units import ORDERS, UnitTable, find_channel, selectivity, unit_table

__all__ = ["ORDERS", "ClassWeight", "ExportReport", "Images", "LogitView", "UnitExample", "UnitTable", "classifier_of",
           "export", "find_channel", "heat_over_box", "kernel_slices", "logit_view", "mosaic", "projections",
           "selectivity", "slug", "source_conv", "unit_examples", "unit_maps", "unit_table"]
