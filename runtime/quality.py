"""``srgan bench quality`` as one library call: assemble the methods (the model, bicubic, peers), run
:func:`runtime.bench.bench_quality` on the datasets and return its report (the CLI only renders it)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import grids
from .defaults import DEFAULT_TILE
from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from .bench import QualityReport
    from .peers import Upscale
    from .session import SRModel

__all__ = ["run_quality"]



def run_quality(datasets: Sequence[str | Path] | None = None, *, models: Sequence[SRModel] = (),
                peers: Sequence[str] = (),
                peers_dir: str | Path | None = None, lpips: str | Path | None = None, tile: int = DEFAULT_TILE,
                device: str = "auto", threads: int = 0, color_fix: bool = False,
                progress: Callable[[str], None] | None = None) -> QualityReport:
    """What ``srgan bench quality`` runs: the loaded ``models`` (none: bicubic and peers only), MATLAB
    bicubic and the ``peers`` on the same LR images of each dataset folder, timed image by image in turn.

    ``datasets``: folders (None = Set5, Set14 and BSD100 under :func:`runtime.paths.data_dir`,
    ``$SRGAN_DATA_DIR``). ``peers``: names of :data:`runtime.peers.PEERS`, or ``all`` for
    every one that loads (the others are listed in ``report.skipped`` with the reason); a
    peer named explicitly must load. ``lpips``: an LPIPS ONNX file (None = the shipped one
    when present). ``tile``: the model's LR tile side (0 = whole image). ``color_fix``: also score each
    model and peer with the colour fix (:mod:`runtime.colorfix`), as ``<name>+fix`` beside it.

    Raises :class:`~runtime.errors.UsageError` (unknown peer, no datasets, models of different scales
    or of one file name), :class:`~runtime.peers.PeerUnavailableError` for a named peer that cannot load.
    """
    from .bench import bench_quality, load_dataset
    from .colorfix import fix_image
    from .evaluation import DEFAULT_SETS, default_sets
    from .lpips import available_lpips, load_lpips
    from .paths import data_dir
    from .peers import PEERS, PeerUnavailableError, load_peer
    from .pipeline import upscale_image, wrap_model

    names = list(dict.fromkeys(n for p in peers for n in (PEERS if p == "all" else [p])))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UsageError(f"unknown peer {', '.join(unknown)}; choose from {', '.join([*PEERS, 'all'])}")
    sets = list(datasets) if datasets else default_sets()
    if not sets:
        raise UsageError(f"no dataset folders given and none of {', '.join(DEFAULT_SETS)} under {data_dir()} "
                         "(set SRGAN_DATA_DIR or pass folders)")
    methods: dict[str, Upscale] = {}
    descriptions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    scales = {m.scale for m in models} or {4}
    if len(scales) > 1:
        raise UsageError("the models' scales differ (" + ", ".join(f"{m.path.name} x{m.scale}" for m in models)
                         + "); compare models of one scale")
    scale = scales.pop()
    if scale != 4 and names:
        raise PeerUnavailableError(f"the peers are x4 but {models[0].path.name} is x{scale}")
    for model in models:
        if model.path.stem in methods:
            raise UsageError(f"two models are named {model.path.stem}; rename one file")

        def run_model(lr: np.ndarray, m: SRModel = model) -> np.ndarray:
            return upscale_image(lr, m, tile=tile)

        methods[model.path.stem] = run_model
        descriptions[model.path.stem] = f"{model.path} on {model.provider}, tile {tile or 'whole'}"
        if color_fix:
            fixed = wrap_model(model, color_fix=True)

            def run_fixed(lr: np.ndarray, m: SRModel = fixed) -> np.ndarray:
                return upscale_image(lr, m, tile=tile)

            methods[f"{model.path.stem}+fix"] = run_fixed
            descriptions[f"{model.path.stem}+fix"] = f"{model.path.stem} with --color-fix (tiled with it)"
    methods["bicubic"] = lambda lr: grids.bicubic_baseline(lr, scale)
    descriptions["bicubic"] = "MATLAB-compatible bicubic (runtime.resize.imresize)"
    for n in names:
        try:
            methods[n] = load_peer(n, folder=None if peers_dir is None else Path(peers_dir), device=device,
                                   threads=threads)
            descriptions[n] = PEERS[n].description
            if color_fix:
                def peer_fixed(lr: np.ndarray, run: Upscale = methods[n]) -> np.ndarray:
                    return fix_image(lr, run(lr), scale)

                methods[f"{n}+fix"] = peer_fixed
                descriptions[f"{n}+fix"] = f"{n}'s output with the colour fix (runtime.colorfix.fix_image)"
        except PeerUnavailableError as e:
            if "all" not in peers:
                raise
            skipped[n] = str(e)
            if progress is not None:
                progress(f"skipping peer {n}: {e}")
    scorer = load_lpips(lpips) if lpips else available_lpips()
    samples = [load_dataset(d, scale) for d in sets]
    report = bench_quality(samples, methods, scale=scale, lpips=scorer, progress=progress)
    report.skipped, report.descriptions = skipped, descriptions
    return report
