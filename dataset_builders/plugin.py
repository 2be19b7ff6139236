"""Registers the built-in dataset builders: the held-out builders and the instruction builders."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl


@hookimpl
def register_dataset_builders(register: Callable[[object], None]) -> None:
    """Register the built-in dataset builders (lazy "module:function" paths; nothing heavy imported)."""
    # -- held-out builders: mim-rad (VQA-RAD), mim-odir (ODIR-5K) --
    from medmim_eval.registry import BuilderEntry as _HeldOutEntry

    register(_HeldOutEntry(
        "mim-rad", "MIM-RAD-style multi-image questions (300 closed + 300 open) composed from VQA-RAD",
        builder="medmim_eval.dataset_builders.mim_rad:build_mim_rad", version="1",
        source_help="the VQA-RAD folder: 'VQA_RAD Dataset Public.json' + 'VQA_RAD Image Folder/'; "
                    "--option split=test|train|all (default test)"))
    register(_HeldOutEntry(
        "mim-odir", "MIM-ODIR-style left/right fundus pairs (300 closed + 300 open) from ODIR-5K",
        builder="medmim_eval.dataset_builders.mim_odir:build_mim_odir", version="2",
        source_help="the ODIR-5K folder: the annotation spreadsheet (.xlsx, or a .csv with the same "
                    "columns) + 'Training Images/'; --option annotations=FILE, options=N (3-6, default 4); "
                    "--skip-missing leaves out patients whose images are absent"))
    # -- end of held-out builders --
    # -- instruction builders: composed (LLaVA-Med), ms-cxr-t, embed, lumiere --
    from medmim_eval.registry import BuilderEntry as _InstructionEntry

    llm_help = ("; LLM wording: --option llm=openai:MODEL or llm_base_url=URL,llm_model=NAME; review: "
              "--option review=decisions.csv, review_export=csv|jsonl")
    register(_InstructionEntry(
        "composed", "2-3-image co-reference samples composed from single-image LLaVA-Med VQA data",
        builder="medmim_eval.dataset_builders.composed:build_composed", version="1",
        source_help="the LLaVA-Med JSON file (or its folder) with the images; --option images=DIR" + llm_help))
    register(_InstructionEntry(
        "ms-cxr-t", "MS-CXR-T previous/current chest X-ray pairs: progression per finding (comparison)",
        builder="medmim_eval.dataset_builders.ms_cxr_t:build_ms_cxr_t", version="1",
        source_help="folder with MS_CXR_T_temporal_image_classification_v1.0.0.csv and MIMIC-CXR images "
                    "(files/pNN/pSUBJECT/sSTUDY/DICOM_ID.dcm|.jpg); --option images=DIR" + llm_help))
    register(_InstructionEntry(
        "embed", "EMBED mammograms: CC+MLO BI-RADS reasoning, view co-reference, temporal forecasting",
        builder="medmim_eval.dataset_builders.embed:build_embed", version="1",
        source_help="folder with EMBED_OpenData_clinical.csv, EMBED_OpenData_metadata.csv and the DICOMs "
                    "(cohort_N/...); --option images=DIR" + llm_help))
    register(_InstructionEntry(
        "lumiere", "LUMIERE glioblastoma MRI: sequence co-reference, pre/post-operative comparison, PD vs SD",
        builder="medmim_eval.dataset_builders.lumiere:build_lumiere", version="1",
        source_help="folder with LUMIERE-ExpertRating-v202211.csv and Imaging/Patient-XXX/week-NNN[-k]/"
                    "{CT1,T1,T2,FLAIR}.nii.gz" + llm_help))
    # -- end of instruction builders --
