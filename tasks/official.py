"""The six official Med-MIM benchmark tasks, read from the released JSON files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medmim_eval.medmim_format import load_medmim_file, source_of
from medmim_eval.tasks_api import LoadedTask, TaskContext


@dataclass(frozen=True)
class OfficialTask:
    name: str
    file: str
    ability: str
    group: str
    column: str
    source_folders: tuple[str, ...]
    builder: str | None = None

    def path(self, context: TaskContext) -> Path:
        return context.data.folder("med-mim") / self.file

    def load(self, context: TaskContext) -> LoadedTask:
        path = self.path(context)

        def image_root(tag: str) -> Path:
            _, folder = source_of(tag)
            return context.data.image_root(folder) if folder else path.parent

        samples = load_medmim_file(path, task=self.name, ability=self.ability, image_root=image_root)
        return LoadedTask(self.name, samples, [path])


OFFICIAL_TASKS: tuple[OfficialTask, ...] = (
    OfficialTask("held-in-temporal", "Med_MIM_benchmark_Held_in_Temporal.json", "temporal", "Held-in", "Temporal", ("embed", "lumiere"), "embed, lumiere"),
    OfficialTask("held-in-reasoning", "Med_MIM_benchmark_Held_in_Reasoning.json", "reasoning", "Held-in", "Reasoning", ("embed",), "embed"),
    OfficialTask("held-in-comparison", "Med_MIM_benchmark_Held_in_Comparison.json", "comparison", "Held-in", "Comparison", ("ms-cxr-t", "lumiere"), "ms-cxr-t, lumiere"),
    OfficialTask("held-in-coreference", "Med_MIM_benchmark_Held_in_Coreference.json", "co-reference", "Held-in", "Co-reference", ("embed", "lumiere"), "embed, lumiere"),
    OfficialTask("held-out-rad", "Med_MIM_benchmark_Held_out_RAD.json", "held-out", "Held-out", "MIM-RAD", ("vqa-rad",), "mim-rad"),
    OfficialTask("held-out-odir", "Med_MIM_benchmark_Held_out_ODIR.json", "held-out", "Held-out", "MIM-ODIR", ("odir",), "mim-odir"),
)

# Where each source dataset is obtained; shown by `medmim-eval data status`.
SOURCE_ACCESS: dict[str, str] = {
    "med-mim": "the Med-MIM benchmark release (the paper's GitHub / Hugging Face page); put the "
    "Med_MIM_benchmark_*.json files in this folder",
    "vqa-rad": "VQA-RAD, open (CC0): https://osf.io/89kps/ -- put 'VQA_RAD Image Folder/' here",
    "odir": "ODIR-5K, open after registration: https://odir2019.grand-challenge.org/ (or Kaggle "
    "'ocular-disease-recognition-odir5k') -- put 'Training Images/' here",
    "ms-cxr-t": "MS-CXR-T + MIMIC-CXR-JPG, credentialed PhysioNet access (data-use agreement): "
    "https://physionet.org/content/ms-cxr-t/ -- images in the MIMIC-CXR p##/p#######/s######## layout as PNG",
    "embed": "EMBED Open Data, credentialed (data-use agreement via the AWS Open Data registry / Emory): "
    "https://github.com/Emory-HITI/EMBED_Open_Data -- cohort_*/... PNGs converted from the DICOMs",
    "lumiere": "LUMIERE, open (CC BY-NC): https://doi.org/10.6084/m9.figshare.c.5904905 -- 256x256 "
    "tumour slices in {ct1,t1,t2,flair}_LUMIERE_images_tumor1200px_256x256/",
}
