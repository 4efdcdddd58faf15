"""A trained checkpoint, used on images: its model and the preprocessing its evaluation used.

    model, info = load_for_inference("checkpoints/cifar10/resnet20/model_best.pth.tar", "cpu")
    x = preprocess_images(["cat.jpg", "dog.png"], info)  # uint8 (N, C, S, S), as the data set path gives
    logits = predict_logits(model, x, info)  # float32 (N, num_classes) on the CPU
    info.classes[int(logits[0].argmax())]

The preprocessing comes from the checkpoint alone (`preprocessing_for`), mirroring `torchcls eval`
(commands/eval.py's split_loader) so that an image file written from a data set gives exactly the
tensor the data set gives:
- ImageNet-style folders (--dataset imagenet): Resize(val_resize) + CenterCrop(val_size), bilinear,
  as data/folder.py's eval_transform (the run's config holds both sizes).
- CIFAR: the image resized (shorter side, then its central square) to 32x32, then the central
  input_size window (input_size is 32, or the --train-crop size the run was evaluated at).
- Fashion-MNIST: resized to 28x28, zero-padded by 2 to 32x32 as the data set is stored, then the
  central input_size window (28 for the main recipe: the original 28x28 picture, unchanged).
Images are converted to what the model was trained on: RGB, or grayscale ("L") when the checkpoint's
mean has one value. Normalisation (mean/std, channel repetition) happens on the device, batched, in
engine/step.py's `prepare`, as in training and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from torchcls.data.datasets import canonical_name, is_folder_dataset
from torchcls.data.fashion_mnist import PAD as FASHION_PAD
from torchcls.data.folder import eval_transform
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.evaluate import tta_logits
from torchcls.engine.setup import resolve_device
from torchcls.engine.step import autocast_ctx, prepare
from torchcls.errors import UserError
from torchcls.models import create_model, get_entry, input_channels
from torchcls.models.weights import load_model_weights

# in-memory data sets: (the pictures' own size, the zero padding each side they are stored with)
STORED_AS = {"cifar10": (32, 0), "cifar100": (32, 0), "fashion-mnist": (28, FASHION_PAD)}


def load_checkpoint_model(path, device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, dict]:
    """The model a torchcls checkpoint holds, on `device`, and the checkpoint. A run with
    --ema-decay evaluated (and chose its best model by) the weights' moving average: that one."""
    state = ckpt_io.safe_load(path)
    missing = [k for k in ("arch", "num_classes", "mean", "std") if k not in state]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}: it is not a torchcls checkpoint, so its model "
            "and preprocessing are unknown"
        )
    try:
        model = create_model(state["arch"], num_classes=int(state["num_classes"]), in_channels=len(state["mean"]),
                             **state.get("model_kwargs", {}))  # fmt: skip
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    ema = state.get("ema")
    weights = ema["state_dict"] if ema and ema.get("updates") else state["state_dict"]
    load_model_weights(model, weights, str(path))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, state


class UnreadableImage(Exception):
    """An image file that cannot be decoded; `reason` says why in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> uint8 (C, size, size) tensor: convert to `mode`, resize the shorter side to
    `resize` (bilinear), take the central `crop` x `crop` window, zero-pad `pad` pixels each side,
    take the central `size` x `size` window (rounding down, as ArrayDataset.center_crop does)."""

    mode: str  # "RGB" or "L"
    resize: int
    crop: int
    pad: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = convert_mode(img, self.mode)
        img = eval_transform(img, self.resize, self.crop)
        arr = np.asarray(img, dtype=np.uint8)
        x = torch.from_numpy(arr.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        h, w = x.shape[-2:]
        if (h, w) != (self.size, self.size):
            top, left = (h - self.size) // 2, (w - self.size) // 2
            x = x[:, top : top + self.size, left : left + self.size].contiguous()
        return x

    def describe(self) -> str:
        steps = [
            "grayscale" if self.mode == "L" else "RGB",
            f"resize to {self.resize} (shorter side, bilinear)",
            f"centre crop {self.crop}",
        ]
        if self.pad:
            steps.append(f"zero-pad {self.pad} px to {self.crop + 2 * self.pad}")
        if self.size != self.crop + 2 * self.pad:
            steps.append(f"centre crop {self.size}")
        return ", ".join(steps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(mean=list(self.mean), std=list(self.std), interpolation="bilinear")
        return d


@dataclass
class InferenceInfo:
    """What a checkpoint says about using its model: classes, preprocessing, the model's input
    channel count (the batch's is repeated to it), the precision its run evaluated with."""

    path: str
    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    channels: int  # models.input_channels(model): 1 for a grayscale SpeedNet, else 3
    amp: str  # the run's --amp ("auto" when unknown); engine/setup.py's resolve_amp makes it a dtype
    dataset: str | None
    state: dict = field(repr=False)  # the checkpoint itself (weights included)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> tuple[float, ...]:
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.preprocessing.std

    @property
    def input_size(self) -> int:
        return self.preprocessing.size


def convert_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img` as RGB or L: grayscale, CMYK, palette, alpha (dropped, as data/folder.py's load_rgb
    does) and 16-bit images all converted."""
    if img.mode == mode:
        return img
    if mode == "RGB" or img.mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "I", "F"):
        try:
            return img.convert(mode)
        except ValueError:
            pass
    return img.convert("RGB").convert(mode)


def read_image(path) -> Image.Image:
    """Decode an image file now (a truncated file fails here, not later); UnreadableImage if it cannot be."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
        return img
    except FileNotFoundError:
        raise UnreadableImage(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a folder") from None
    except PermissionError:
        raise UnreadableImage(path, "permission denied") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file PIL can decode") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        msg = str(e).split("\n")[0]
        reason = "truncated or corrupt image" + (f" ({msg})" if msg else "")
        raise UnreadableImage(path, reason) from None


def preprocess_file(path, preprocessing) -> tuple[torch.Tensor | None, str | None]:
    """(the preprocessed uint8 image, None), or (None, why) for a file that cannot be read or decoded:
    one file's failure is reported and skipped, never the run's (predict's and eval --folder's readers)."""
    try:
        return preprocessing(read_image(path)), None
    except UnreadableImage as e:
        return None, e.reason
    except Exception as e:  # noqa: BLE001 - a decoder's odd failure: that file is skipped, not the run
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'cannot decode'}"


def _default_size(state: dict) -> int:
    if state.get("input_size"):
        return int(state["input_size"])
    try:
        return get_entry(state["arch"]).input_size
    except ValueError:
        return 32


def _known_dataset(name) -> str | None:
    if not name:
        return None
    try:
        return canonical_name(name)
    except UserError:
        return None


def preprocessing_for(state: dict, size: int | None = None, resize: int | None = None) -> Preprocessing:
    """The evaluation preprocessing of checkpoint `state` (see the module's docstring). `size` /
    `resize` override the model's input size / the shorter side before the crop: then it is a plain
    Resize(resize) + CenterCrop(size), `resize` defaulting to size x the checkpoint's own ratio."""
    cfg = state.get("config") or {}
    mean, std = tuple(float(v) for v in state["mean"]), tuple(float(v) for v in state["std"])
    mode = "L" if len(mean) == 1 else "RGB"
    dataset = _known_dataset(state.get("dataset") or cfg.get("dataset"))
    s0 = _default_size(state)
    if dataset is not None and is_folder_dataset(dataset):
        base = Preprocessing(mode, int(cfg.get("val_resize", round(s0 * 256 / 224))), s0, 0, s0, mean, std)
    elif dataset in STORED_AS:
        native, pad = STORED_AS[dataset]
        if s0 > native + 2 * pad:
            raise UserError(f"{state.get('arch')}: input size {s0} is larger than {dataset}'s {native + 2 * pad} px")
        base = Preprocessing(mode, native, native, pad, s0, mean, std)
    elif s0 >= 224:  # an ImageNet-sized model of an unknown data set: the standard 256/224 ratio
        base = Preprocessing(mode, round(s0 * 256 / 224), s0, 0, s0, mean, std)
    else:
        base = Preprocessing(mode, s0, s0, 0, s0, mean, std)
    if not size and not resize:
        return base
    s = int(size or base.size)
    r = int(resize or round(s * base.resize / base.crop))
    if s < 1 or r < 1:
        raise UserError(f"--size and --resize must be positive, got {size} and {resize}")
    if mode == "L" and r < s:
        raise UserError(f"--resize {r} must be at least --size {s} for this grayscale model")
    return Preprocessing(mode, r, s, 0, s, mean, std)


def load_for_inference(
    path, device: str | torch.device = "cpu", channels_last: bool = False, size=None, resize=None
) -> tuple[nn.Module, InferenceInfo]:
    """The model of a torchcls checkpoint (in eval mode, on `device`: "auto", "cpu", "cuda" or a
    torch.device) and what it takes. A file that is not a torchcls checkpoint is a UserError."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model, state = load_checkpoint_model(path, dev, channels_last)
    model.eval()
    n = int(state["num_classes"])
    classes = [str(c) for c in state.get("classes") or []]
    if len(classes) != n:
        classes = [str(i) for i in range(n)]
    cfg = state.get("config") or {}
    info = InferenceInfo(
        path=str(path),
        arch=str(state["arch"]),
        classes=classes,
        preprocessing=preprocessing_for(state, size, resize),
        channels=input_channels(model),
        amp=str(cfg.get("amp", "auto")),
        dataset=state.get("dataset") or cfg.get("dataset"),
        state=state,
    )
    return model, info


def preprocess_images(images: Iterable, info: InferenceInfo | Preprocessing) -> torch.Tensor:
    """uint8 (N, C, S, S) of image paths and/or PIL images, preprocessed as the checkpoint's
    evaluation did. An unreadable file raises UnreadableImage."""
    pre = info.preprocessing if isinstance(info, InferenceInfo) else info
    tensors = [pre(img if isinstance(img, Image.Image) else read_image(img)) for img in images]
    if not tensors:
        return torch.empty((0, pre.channels, pre.size, pre.size), dtype=torch.uint8)
    return torch.stack(tensors)


def model_input(x: torch.Tensor, info: InferenceInfo, channels_last: bool = False) -> torch.Tensor:
    """A uint8 batch (on the model's device) -> the normalised float input the model takes."""
    return prepare(x, info.mean, info.std, channels_last, info.channels)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    info: InferenceInfo,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta_flip: bool = False,
) -> torch.Tensor:
    """float32 (N, num_classes) logits on the CPU of a uint8 batch `x` (with `tta_flip`: the log of
    the probabilities averaged with the mirror image's, as `torchcls eval --tta-flip`)."""
    device = next(model.parameters()).device
    inp = model_input(x.to(device), info, channels_last)
    with autocast_ctx(device, amp_dtype):
        out = tta_logits(model, inp, flip=tta_flip)
    return out.float().cpu()


def top_k(logits: torch.Tensor, classes: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """(class, probability) pairs of the k most probable classes of each row, most probable first."""
    probs = logits.float().softmax(1)
    p, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(classes[i], float(v)) for i, v in zip(row_i, row_p, strict=True)] for row_i, row_p in
            zip(idx.tolist(), p.tolist(), strict=True)]  # fmt: skip
