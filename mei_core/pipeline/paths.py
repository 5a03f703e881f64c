"""Every file the pipeline reads or writes, named once.

Rules build their patterns from the same functions by passing wildcards (``paths.shard_file(
"{ensemble}", "{method}", "{seed}", "{shard}")``), so a path is spelt in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the two member groups of an ensemble: generation members, and held-out members for validation
MEMBER_GROUPS = ("members", "validation_members")
#: the combined tables in ``results/`` (one per-ensemble table each)
TABLES = ("scores", "traces", "validation", "activations")


@dataclass(frozen=True)
class Paths:
    results: str = "results"
    resources: str = "resources"

    # ------------------------------------------------------------------ parse-time spec files
    def method_spec(self, ensemble: str, method: str) -> str:
        return f"{self.resources}/methods/{ensemble}/{method}.json"

    def member_spec(self, ensemble: str, group: str) -> str:
        return f"{self.resources}/ensembles/{ensemble}/{group}.spec.json"

    def objective_spec(self, ensemble: str) -> str:
        return f"{self.resources}/objectives/{ensemble}.spec.json"

    def shard_spec(self, ensemble: str, shard: int | str) -> str:
        return f"{self.resources}/objectives/{ensemble}/shard{shard}.json"

    def probe_cache(self) -> str:
        """Members already loaded and probed at plan time (by spec, file stats and source)."""
        return f"{self.resources}/ensembles/probed_members.json"

    def file_checksums(self) -> str:
        """sha256 of member files by size, mtime, ctime and inode (hashed again only when one changes)."""
        return f"{self.resources}/ensembles/member_checksums.json"

    def plan_record(self) -> str:
        """The plan of the last main Snakemake process (read by jobs' own Snakemake processes)."""
        return f"{self.resources}/plan.json"

    def demo_spec(self, demo: str) -> str:
        return f"{self.demo_folder(demo)}/spec.json"

    # ------------------------------------------------------------------ job outputs
    def demo_folder(self, demo: str) -> str:
        return f"{self.resources}/demo/{demo}"

    def manifest(self, ensemble: str, group: str) -> str:
        return f"{self.resources}/ensembles/{ensemble}/{group}.manifest.json"

    def objective_table(self, ensemble: str) -> str:
        return f"{self.resources}/objectives/{ensemble}.parquet"

    def shard_file(self, ensemble: str, method: str, seed: int | str, shard: int | str) -> str:
        return f"{self.resources}/meis/{ensemble}/{method}/seed{seed}/shard{shard}.npz"

    def heldout_file(self, ensemble: str, method: str, seed: int | str, shard: int | str) -> str:
        return f"{self.resources}/heldout/{ensemble}/{method}/seed{seed}/shard{shard}.npz"

    def ensemble_table(self, ensemble: str, table: str) -> str:
        return f"{self.resources}/tables/{ensemble}.{table}.parquet"

    def zarr(self, ensemble: str) -> str:
        return f"{self.results}/{ensemble}.zarr"

    def table(self, table: str) -> str:
        return f"{self.results}/{table}.parquet"

    def video_folder(self, ensemble: str, method: str) -> str:
        """GIFs of a video ensemble's MEIs, one per neuron (``neuron<k>.gif``)."""
        return f"{self.results}/figures/{ensemble}/videos/{method}"

    def grid_figure(self, ensemble: str, grid: str) -> str:
        """The methods of one ``grid`` compared (score, held-out agreement, ground truth)."""
        return f"{self.results}/figures/{ensemble}/grids/{grid}.png"

    def checksums(self) -> str:
        """sha256 of every Parquet table in ``results`` (read by ``python -m mei_core verify``)."""
        return f"{self.results}/checksums.json"

    def checksum_record(self, output: str) -> str:
        """The sha256 of a result, recorded by the job that wrote it (``verify``)."""
        return f"{self.resources}/checksums/{output}.json"

    def figure(self, ensemble: str, method: str) -> str:
        return f"{self.results}/figures/{ensemble}/{method}.png"

    # ------------------------------------------------------------------ the offline results browser
    def browse_folder(self) -> str:
        """The browser's folder: ``index.html`` and everything it loads, by relative paths."""
        return f"{self.results}/browse"

    def browse_index(self) -> str:
        return f"{self.browse_folder()}/index.html"

    def browse_data(self) -> str:
        """The table of every MEI, as a script assigning a global (a page opened from the file system may
        not ``fetch()`` a local JSON file, but it may load a script)."""
        return f"{self.browse_folder()}/data.js"

    def browse_traces(self) -> str:
        """Traces per block of neurons, one script each, loaded when a neuron page opens."""
        return f"{self.browse_folder()}/traces"

    def browse_thumbnails(self, ensemble: str, method: str) -> str:
        """Thumbnail sprite sheets of one (ensemble, method) and their ``meta.json``: redrawn only when
        that method's shards change."""
        return f"{self.browse_folder()}/thumbnails/{ensemble}/{method}"

    def log(self, *parts: str) -> str:
        """Job logs (``resources/logs/<rule>/…``); per-shard progress bars are in ``log("meis", …)``."""
        return f"{self.resources}/logs/{'/'.join(parts)}.log"
