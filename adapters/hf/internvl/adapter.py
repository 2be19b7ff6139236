"""The ``hf-internvl:`` adapter: an InternVL checkpoint run in-process by transformers.

Two routes (``mode=``, see :mod:`medmim_eval.adapters.hf.internvl.plugin` for the options):

``remote``  InternVL2 as published (e.g. OpenGVLab/InternVL2-8B): ``AutoModel`` and ``AutoTokenizer``
            with ``trust_remote_code=True``; each sample goes through the checkpoint's own
            ``model.chat(tokenizer, pixel_values, question, generation_config, num_patches_list=...)``.
            Images are tiled by :mod:`medmim_eval.adapters.hf.internvl.tiling` (InternVL's dynamic preprocessing) with the
            sample's tile budget split over its images, concatenated in prompt order; the question
            carries ``Image-{i}: <image>\\n`` where image ``i`` stands (InternVL2's documented
            multi-image form) and a single image as ``<image>\\n`` (its documented single-image
            form; revision 2 of the question, revision 1 labelled it ``Image-1``). The vLLM route's
            template renders the same. One sample per call: the remote ``batch_chat`` expands one
            ``<image>`` per question, so it cannot take several images.
            The remote code wraps the question in its own conversation template (InternLM2 format
            and system message for InternVL2-8B); the record hashes the question it was given.
``native``  transformers' ``InternVLForConditionalGeneration`` and the checkpoint's processor
            (image-only: see :mod:`medmim_eval.adapters.hf.internvl.processor`), its image processor always the PIL
            ``GotOcr2ImageProcessorPil`` (:func:`load_native_processor`). ``prompt=checkpoint``
            (default) is the processor's own chat template with image and text parts in order (the ``-hf``
            conversions': no system message, ``<|im_end|>\n``, unlabelled images);
            ``prompt=internvl2`` is the query InternVL2's ``model.chat`` builds for InternVL2-8B
            (``internlm2-chat``: its system message, no newline after ``<|im_end|>``, the question
            as the remote route gives it), for a transformers conversion of an InternVL2 checkpoint.
            Either way each image placeholder expands to ``<img>`` + ``<IMG_CONTEXT>`` per tile
            token + ``</img>`` as ``chat`` expands ``<image>``. Each sample is processed with its
            own tile budget, then the batch is left-padded (image counts may differ) and decoded
            greedily unless a temperature is set.

Every answer's record gives the images' count, order, the size each was resized to before tiling,
the tiles per image (in ``notes``) and the hash of the rendered prompt. A sample with more than
``max_images`` images is answered with :class:`~medmim_eval.errors.TooManyImagesError`.

Tested on tiny checkpoints only; the remote route runs InternVL2's own remote code (OpenGVLab/InternVL,
the reference sources of tests/parity) on a tiny random InternViT + InternLM2.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from medmim_eval.adapter import AdapterContext, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.buffers import restore_buffers
from medmim_eval.adapters.hf.common import (check_image_count, checked_target, checkpoint_fingerprint, file_sha256,
                                            generate_answers, input_device, load_model, load_rgb, stop_token_ids)
from medmim_eval.adapters.hf.internvl.plugin import INSTALL_HINT, check_hf_internvl, checkpoint_mode, read_config
from medmim_eval.adapters.hf.internvl.tiling import DEFAULT_MAX_TILES, choose_grid, per_image_budget, tile_image
from medmim_eval.adapters.hf.skeleton import InProcessAdapter
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.prompt_formats import PromptFormat, render_content
from medmim_eval.schema import PromptRecord, Sample, TextPart, content_hash

DEFAULT_BATCH = 8
DEFAULT_MAX_IMAGES = 3
IMAGE_PLACEHOLDER = "<image>"
# The question handed to InternVL2's model.chat: each image labelled and in place (two or more
# images), or the single image unlabelled, as InternVL2's README writes them.
INTERNVL2_QUESTION = PromptFormat(name="internvl2_chat", image=lambda i: f"Image-{i}: {IMAGE_PLACEHOLDER}\n",
                                  head="", tail="", response_prefix="", response_suffix="", bos_in_text=False,
                                  stop_strings=("<|im_end|>",), image_token=IMAGE_PLACEHOLDER, revision=2)
INTERNVL2_SINGLE = replace(INTERNVL2_QUESTION, image=lambda i: f"{IMAGE_PLACEHOLDER}\n")
# InternVL2-8B's conversation template (``internlm2-chat`` in InternVL's conversation.py) and its
# default system message: what model.chat wraps the question in, for native ``prompt=internvl2``.
INTERNLM2_CHAT_SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
                         "是一个有用无害的人工智能助手。")
NATIVE_PROMPTS = {"checkpoint": "native_chat_template", "internvl2": "internvl2_internlm2_chat"}
# Native route's revision: 2 = the PIL image processor always (1 let transformers pick the
# torchvision one where installed); the prompt=internvl2 query is new in revision 2.
NATIVE_REVISION = 2


def internlm2_chat_query(question: str, system: str = INTERNLM2_CHAT_SYSTEM) -> str:
    """The single-turn ``internlm2-chat`` query around ``question`` (no newline after ``<|im_end|>``)."""
    return (f"<|im_start|>system\n{system}<|im_end|><|im_start|>user\n{question}<|im_end|>"
            f"<|im_start|>assistant\n")


def ensure_generate(model: Any) -> None:
    """Give the remote language model a working ``generate`` when its class lacks one.

    InternLM2's remote ``InternLM2ForCausalLM`` defines ``prepare_inputs_for_generation`` but does not
    inherit ``GenerationMixin``; since transformers 4.50 ``PreTrainedModel`` no longer does either,
    so InternVL2's ``chat`` fails with "has no attribute 'generate'" (and mixing the class in fails
    under transformers 5, see :mod:`medmim_eval.adapters.hf.legacy_decoding`). The instance gets
    :func:`~medmim_eval.adapters.hf.legacy_decoding.legacy_generate`, which drives the model's own legacy-cache contract.
    """
    language_model = getattr(model, "language_model", None)
    if language_model is None or hasattr(language_model, "generate"):
        return
    if "prepare_inputs_for_generation" not in dir(language_model):
        return
    import functools

    from medmim_eval.adapters.hf.legacy_decoding import legacy_generate

    language_model.generate = functools.partial(legacy_generate, language_model)


def load_native_processor(path: Path) -> Any:
    """The checkpoint's InternVL processor (image-only) with its image processor on the PIL backend.

    transformers picks the torchvision backend wherever torchvision is installed; its bicubic resize
    of uint8 tensors lands up to one grey level away from PIL's, which InternVL2's ``load_image``
    (and the remote route) use."""
    from medmim_eval.adapters.hf.internvl.processor import ImageOnlyInternVLProcessor

    processor = ImageOnlyInternVLProcessor.from_pretrained(path)
    if getattr(processor.image_processor, "backend", "pil") != "pil":
        from transformers import AutoImageProcessor

        processor.image_processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    return processor


class HFInternVLAdapter(InProcessAdapter):
    """The loaded InternVL model (``ModelAdapter``); generation runs in a worker thread."""

    def __init__(self, model_id: str, path: Path, options: dict[str, str]) -> None:
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self.mode = options.get("mode") or checkpoint_mode(read_config(path)) or "native"
        self.prompt = options.get("prompt") or "checkpoint"
        if self.prompt not in NATIVE_PROMPTS:
            raise MedmimError(f"hf-internvl prompt={self.prompt!r}: use checkpoint or internvl2")
        if self.mode == "remote" and "prompt" in options:
            raise MedmimError("hf-internvl prompt= applies to mode=native; mode=remote always uses the "
                              "checkpoint's own model.chat template")
        # model.chat takes one sample per call: the remote route never batches.
        native = {**options, "batch": options.get("batch") or str(DEFAULT_BATCH)} if self.mode == "native" else \
            {**options, "batch": "1"}
        self._setup(torch, model_id, path, native, batch=DEFAULT_BATCH, max_images=DEFAULT_MAX_IMAGES)
        self.where = self.placement
        self.max_tiles = int(options.get("max_tiles") or DEFAULT_MAX_TILES)
        if self.mode == "remote":
            self._load_remote()
        else:
            self._load_native()

    # --- loading ---------------------------------------------------------------------------------
    def _load_remote(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=True)
        kwargs: dict[str, Any] = {"trust_remote_code": True, "dtype": self.where.dtype}
        if self.where.device_map:
            kwargs["device_map"] = self.where.device_map
        model = AutoModel.from_pretrained(self.path, **kwargs)
        restore_buffers(model, f"hf-internvl {self.path}")  # remote code's rotary caches (transformers 5)
        self.model = (model if self.where.device_map else model.to(self.where.device)).eval()
        if not callable(getattr(self.model, "chat", None)):
            raise MedmimError(f"hf-internvl: {type(self.model).__name__} from {self.path} has no chat() method; "
                              f"mode=remote needs InternVL's remote code (InternVLChatModel)")
        ensure_generate(self.model)
        config = self.model.config
        vision_size = getattr(getattr(config, "vision_config", None), "image_size", 448)
        vision_size = vision_size[0] if isinstance(vision_size, (list, tuple)) else vision_size
        self.tile_size = int(getattr(config, "force_image_size", None) or vision_size)
        self.use_thumbnail = bool(getattr(config, "use_thumbnail", True))
        dynamic = bool(getattr(config, "dynamic_image_size", True))
        self.per_image_cap = int(getattr(config, "max_dynamic_patch", DEFAULT_MAX_TILES)) if dynamic else 1
        self.template = str(getattr(config, "template", "") or "the checkpoint's")

    def _load_native(self) -> None:
        from transformers import InternVLForConditionalGeneration

        self.processor = load_native_processor(self.path)
        if not getattr(self.processor, "chat_template", None):
            raise MedmimError(f"hf-internvl: {self.path} has no chat template (chat_template.jinja or "
                              f"chat_template.json); copy it from the checkpoint's transformers conversion")
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(InternVLForConditionalGeneration, self.path, self.where)
        if self.processor.image_token_id != self.model.config.image_token_id:
            raise MedmimError(f"hf-internvl: the processor's {self.processor.image_token} is id "
                              f"{self.processor.image_token_id}, the model expects {self.model.config.image_token_id}")
        size = self.processor.image_processor.size
        self.tile_size = int(size["height"] if isinstance(size, dict) else size.height)
        self.use_thumbnail = True  # GotOcr2ImageProcessor always appends one to a multi-tile image
        self.per_image_cap = int(getattr(self.processor.image_processor, "max_patches", DEFAULT_MAX_TILES))
        self.stop_ids = stop_token_ids(self.model, self.tokenizer, INTERNVL2_QUESTION)

    def fingerprint(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.mode == "remote":
            extra["remote_code"] = {p.name: file_sha256(p) for p in sorted(self.path.glob("*.py"))}
            extra["question"] = INTERNVL2_QUESTION.tag
        else:
            extra["prompt"] = f"{NATIVE_PROMPTS[self.prompt]}@{NATIVE_REVISION}"
            if self.prompt == "internvl2":
                extra["question"] = INTERNVL2_QUESTION.tag
        return checkpoint_fingerprint("hf-internvl", self.path, self.lineage, mode=self.mode,
                                      dtype=self.where.dtype_name, max_images=self.max_images,
                                      max_tiles=self.max_tiles, tile_size=self.tile_size, **extra)

    # --- preparing one prompt --------------------------------------------------------------------
    def tiles_per_image(self, n_images: int) -> int:
        """The tiles each of ``n_images`` images may use (the budget split, capped by the checkpoint's)."""
        return min(per_image_budget(self.max_tiles, n_images), self.per_image_cap)

    def _messages(self, sample: Sample) -> list[dict[str, Any]]:
        content = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                   for p in sample.prompt.parts]
        return [{"role": "user", "content": content}]

    def render(self, sample: Sample) -> str:
        """The text the model is given: the question for ``model.chat`` (remote) or the templated prompt."""
        n = len(sample.prompt.images)
        if self.mode == "remote":
            fmt = INTERNVL2_SINGLE if n == 1 else INTERNVL2_QUESTION
            text, token = render_content(fmt, sample.prompt), IMAGE_PLACEHOLDER
        elif self.prompt == "internvl2":
            token = self.processor.image_token
            if any(token in p.text for p in sample.prompt.parts if isinstance(p, TextPart)):
                raise MedmimError(f"the prompt text itself contains {token!r}; nothing was sent")
            fmt = INTERNVL2_SINGLE if n == 1 else INTERNVL2_QUESTION
            question = render_content(fmt, sample.prompt)
            if question.count(IMAGE_PLACEHOLDER) != n:
                raise MedmimError(f"the prompt text itself contains {IMAGE_PLACEHOLDER!r}; nothing was sent")
            text = internlm2_chat_query(question.replace(IMAGE_PLACEHOLDER, token))
        else:
            text = self.processor.apply_chat_template(self._messages(sample), add_generation_prompt=True,
                                                      tokenize=False)
            token = self.processor.image_token
        if text.count(token) != n:
            raise MedmimError(f"the prompt text itself contains {token!r}; nothing was sent")
        return text

    def prepare_sample(self, sample: Sample) -> tuple[str, Any, list[int], PromptRecord]:
        """(text, model inputs, tiles per image, record); raises TooManyImagesError or MedmimError if refused.

        Remote: the inputs are the concatenated tiles. Native: the processor's one-row output."""
        check_image_count(sample, self.max_images, self.model_id)
        images = sample.prompt.images
        text = self.render(sample)
        budget = self.tiles_per_image(len(images))
        loaded, notes, sizes, tiles = [], [], [], []
        for n, part in enumerate(images, 1):
            pixels, note = load_rgb(part.path)
            loaded.append(pixels)
            columns, rows = choose_grid(pixels.width, pixels.height, self.tile_size, 1, budget)
            thumbnail = self.use_thumbnail and columns * rows > 1
            tiles.append(columns * rows + int(thumbnail))
            sizes.append((columns * self.tile_size, rows * self.tile_size))
            notes.append(f"image {n}: {columns}x{rows} grid of {self.tile_size}px tiles"
                         + (" + thumbnail" if thumbnail else "") + (f"; {note}" if note else ""))
        if images:
            notes.insert(0, f"tiles per image: {tiles} (max_tiles={self.max_tiles} over {len(images)} "
                            f"image(s): at most {budget} each)")
        if self.mode == "remote":
            notes.append(f"question given to model.chat; the remote code's {self.template} template wraps it")
            inputs = self._remote_pixels(loaded, budget, tiles)
        else:
            inputs = self.processor(text=[text], images=loaded or None, return_tensors="pt",
                                    crop_to_patches=True, max_patches=budget)
            got = int(inputs["pixel_values"].shape[0]) if "pixel_values" in inputs else 0
            if got != sum(tiles):
                raise MedmimError(f"the processor made {got} tiles, the tiling rule {sum(tiles)}: {tiles}")
        record = PromptRecord(n_images=len(images), image_order=[p.index for p in images], image_sizes=sizes,
                              rendered_prompt_sha256=content_hash(text), notes=notes)
        return text, inputs, tiles, record

    def _remote_pixels(self, images: list[Any], budget: int, tiles: list[int]) -> Any:
        if not images:
            return None
        tiled = [tile_image(image, self.tile_size, budget, self.use_thumbnail) for image in images]
        if [t.n_tiles for t in tiled] != tiles:  # pragma: no cover - one rule, two call sites
            raise AssertionError("tile counts disagree")
        return self.torch.cat([t.pixel_values for t in tiled])

    # --- running the model (blocking; called in a worker thread) ---------------------------------
    def batch_inputs(self, prepared: list[tuple[str, Any, list[int], PromptRecord]]) -> dict[str, Any]:
        """One left-padded native batch from per-sample processor outputs, on the model's device."""
        torch = self.torch
        rows = [p[1] for p in prepared]
        width = max(int(r["input_ids"].shape[1]) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            length = int(row["input_ids"].shape[1])
            ids[i, width - length:] = row["input_ids"][0]
            mask[i, width - length:] = row["attention_mask"][0]
        device = input_device(self.model, self.where)
        batch: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        pixels = [r["pixel_values"] for r in rows if "pixel_values" in r]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels).to(device=device, dtype=self.where.dtype)
        return batch

    def next_token_logits(self, *samples: Sample) -> Any:
        """The logits of the first answer token, one row per sample, from one left-padded native
        batch (float32 on the CPU). For checks: image order, batching."""
        if self.mode != "native":
            raise MedmimError("next_token_logits needs mode=native (model.chat returns text only)")
        batch = self.batch_inputs([self.prepare_sample(s) for s in samples])
        with self.torch.inference_mode():
            return self.model(**batch).logits[:, -1].float().cpu()

    def run(self, prepared: list[tuple[str, Any, list[int], PromptRecord]],
            settings: GenerationSettings) -> list[GenerationResult]:
        if self.mode == "remote":
            return [self._chat(p, settings) for p in prepared]
        answers = generate_answers(self.torch, self.model, self.tokenizer, self.batch_inputs(prepared), settings,
                                   self.stop_ids, INTERNVL2_QUESTION)
        return [GenerationResult(text=text, sent=p[3], tokens=tokens) for p, (text, tokens) in zip(prepared, answers)]

    def _chat(self, prepared: tuple[str, Any, list[int], PromptRecord], settings: GenerationSettings) -> GenerationResult:
        torch = self.torch
        question, pixels, tiles, record = prepared
        config: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": False}
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
            config.update(do_sample=True, temperature=settings.temperature, top_p=1.0, top_k=0)
        if pixels is not None:
            pixels = pixels.to(device=input_device(self.model, self.where), dtype=self.where.dtype)
        with torch.inference_mode():
            answer = self.model.chat(self.tokenizer, pixels, question, config,
                                     num_patches_list=tiles if pixels is not None else None)
        return GenerationResult(text=str(answer).strip(), sent=record)


def make_hf_internvl(target: str | None, options: dict[str, str], context: AdapterContext) -> HFInternVLAdapter:
    """The factory registered as ``hf-internvl``. Raises MissingBackendError or MedmimError with the fix."""
    model_id, path = checked_target("hf-internvl", target, options, check_hf_internvl, INSTALL_HINT)
    return HFInternVLAdapter(model_id, path, options)
