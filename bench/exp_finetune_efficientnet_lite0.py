"""Experiment: fine-tune the whole EfficientNet-Lite0 (PyTorch, CPU) on folds of the Flipkart
sample, to see whether fine-tuning beats the frozen linear probe for image-only accuracy.
Outside ``pm train`` (which fine-tunes Keras backbones); figures are in docs/classify.md.

    python bench/exp_finetune_efficientnet_lite0.py [--folds 0,1,2,3,4] [--epochs 6]
                                                   [--backbone-lr 1e-4] [--data PATH]

Same StratifiedKFold(5, shuffle, seed 0) split as ``pm train``. Photos are padded to a white
square at 256 px (``load_image``); network, weights and pixel normalisation are those of the
``efficientnet-lite0`` plugin. Training draws a random crop (75-100 % of the area), a
horizontal flip and a rotation of up to 10 degrees, resized to 224 px. The head starts
from the logistic regression of the frozen features (also reported: the frozen probe of the
same fold and preprocessing); then the whole network trains with AdamW and a one-cycle
schedule (head 1e-3, backbone --backbone-lr), label smoothing 0.1, BatchNormalization kept
at ImageNet statistics. Test: the fold's held-out photos, centre crop averaged with its mirror image.
The number of epochs is fixed beforehand; the per-epoch test accuracy is printed for the
curve only and the last epoch is the figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE, LOAD = 224, 256


def centre(batch):
    o = (LOAD - SIZE) // 2
    return batch[:, o:o + SIZE, o:o + SIZE]


def augment(batch, rng):
    out = np.empty((len(batch), SIZE, SIZE, 3), np.uint8)
    for i, image in enumerate(batch):
        side = int(LOAD * np.sqrt(rng.uniform(0.75, 1.0)))
        x0, y0 = rng.integers(0, LOAD - side + 1, size=2)
        crop = image[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        rotation = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-10, 10), 1.0)
        crop = cv2.warpAffine(np.ascontiguousarray(crop), rotation, (side, side), borderValue=(255, 255, 255))
        out[i] = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "flipkart"))
    parser.add_argument("--folds", default="0", help="comma-separated fold numbers (0-4)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--backbone-lr", type=float, default=1e-4)
    args = parser.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.images import load_image
    from placedemarche.core.plugins import create_plugin

    torch.set_num_threads(2)
    torch.manual_seed(0)
    catalog = load_catalog(args.data).validated()
    classes = sorted(set(catalog.labels))
    y = np.array([classes.index(label) for label in catalog.labels])
    X = np.stack([load_image(p, LOAD) for p in catalog.image_paths])
    wanted = {int(f) for f in args.folds.split(",")}

    plugin = create_plugin("image", "efficientnet-lite0")

    def tensor(batch):
        return torch.from_numpy(plugin._normalise(batch)).permute(0, 3, 1, 2).contiguous()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = plugin.load_network()  # a fresh network with the packaged ImageNet weights
            self.drop = torch.nn.Dropout(0.3)
            self.head = torch.nn.Linear(1280, len(classes))

        def features(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

        def forward(self, x):
            return self.head(self.drop(self.features(x)))

    def features(model, idx):
        model.eval()
        with torch.inference_mode():
            return np.concatenate([model.features(tensor(centre(X[idx[i:i + 64]]))).numpy()
                                   for i in range(0, len(idx), 64)])

    def predict(model, idx):
        model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(idx), 64):
                batch = centre(X[idx[i:i + 64]])
                out.append(torch.softmax(model(tensor(batch)), 1)
                           + torch.softmax(model(tensor(batch[:, :, ::-1].copy())), 1))
        return torch.cat(out).numpy()

    results = []
    splitter = StratifiedKFold(5, shuffle=True, random_state=0)
    for fold, (train, test) in enumerate(splitter.split(X, y)):
        if fold not in wanted:
            continue
        started = time.time()
        model = Model()
        frozen = features(model, train)
        scaler = StandardScaler().fit(frozen)
        probe = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(frozen), y[train])
        probe_acc = float((probe.predict(scaler.transform(features(model, test))) == y[test]).mean())
        print(f"fold {fold}: frozen probe {probe_acc:.3f}", flush=True)
        with torch.no_grad():  # the head starts as the probe (the scaler folded in)
            model.head.weight.copy_(torch.tensor(probe.coef_ / scaler.scale_, dtype=torch.float32))
            model.head.bias.copy_(torch.tensor(
                probe.intercept_ - (probe.coef_ * scaler.mean_ / scaler.scale_).sum(1), dtype=torch.float32))
        optimiser = torch.optim.AdamW([{"params": model.net.parameters(), "lr": args.backbone_lr},
                                       {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=1e-4)
        steps = args.epochs * int(np.ceil(len(train) / 32))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[args.backbone_lr, 1e-3],
                                                       total_steps=steps, pct_start=0.15)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        rng = np.random.default_rng(fold)
        for epoch in range(args.epochs):
            model.train()
            for module in model.net.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
            order = rng.permutation(train)
            total = 0.0
            for i in range(0, len(order), 32):
                idx = order[i:i + 32]
                loss = loss_fn(model(tensor(augment(X[idx], rng))), torch.from_numpy(y[idx]))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(idx)
            accuracy = float((predict(model, test).argmax(1) == y[test]).mean())
            print(f"fold {fold} epoch {epoch + 1}: loss {total / len(train):.3f}, test accuracy {accuracy:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
        results.append({"fold": fold, "probe": probe_acc, "finetuned": accuracy,
                        "seconds": round(time.time() - started, 1)})
        print(json.dumps(results[-1]), flush=True)
    print(f"mean over folds {sorted(wanted)}: frozen probe {np.mean([r['probe'] for r in results]):.3f}, "
          f"fine-tuned {np.mean([r['finetuned'] for r in results]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
