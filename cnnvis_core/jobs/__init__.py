"""Jobs over whole data sets: dataset examples per channel, channel statistics, CAM quality.

::

    from cnnvis_core import jobs
    from cnnvis_core.data import Dataset
    ds = Dataset.from_path("val/")                 # folder, ImageFolder tree, .zip/.tar, or a list of paths
    ex = jobs.dataset_examples(engine, ds, layers=None, k=9, executor="local", ray_address=None,
                               progress=None, out=None)
    ex.top(layer, channel)                         # [Example(path, activation, position, box, id), …] best first
    ex.crop(layer, channel, 0)                     # the first one's receptive field, cut from its file
    st = jobs.channel_stats(engine, ds)            # st.peak[layer], st.mean[layer], st.active[layer]; st.dead(eps)
    cq = jobs.cam_quality(engine, ds, methods=("gradcam",))   # cq.summary[method].deletion.mean, …
    ex.save(folder); jobs.load(folder)             # any result, without the model
    jobs.merge(a, b)                               # results of disjoint parts of one data set

Each job is a map over batches and an associative merge (:mod:`.base`), run in shards with
checkpoints, progress and cancelling (:mod:`.runner`) on the local executor or on Ray
(:mod:`.ray_executor`); results are Parquet tables with a JSON manifest (:mod:`.results`,
:mod:`.files`). Command line: ``python -m cnnvis_core.jobs --help``.
"""

from ..spec import ModelSpec
from .api import EXECUTORS, cam_quality, channel_stats, dataset_examples, execute
from .base import IdRanges, JobCancelled, JobError, Partial, Progress
from .models import weights_hash
from .quality import Interval
from .results import (
    CamQuality,
    ChannelStats,
    DatasetExamples,
    Example,
    MethodQuality,
    PeakHistogram,
    Result,
    find,
    load,
    merge,
)

__all__ = ["EXECUTORS", "CamQuality", "ChannelStats", "DatasetExamples", "Example", "IdRanges", "Interval",
           "JobCancelled", "JobError", "MethodQuality", "ModelSpec", "Partial", "PeakHistogram", "Progress", "Result",
           "cam_quality",
           "channel_stats", "dataset_examples", "execute", "find", "load", "merge", "weights_hash"]
