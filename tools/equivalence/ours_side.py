"""mean_geo's side of the float64 comparison: the same weights (converted by our loader), the same
inputs, our model, loss, AdamW and schedule; prints the largest relative difference of each
quantity.  ``python ours_side.py dac|camp|sample4geo RECORD.pt`` (README.md beside this file)."""

# ruff: noqa: E402  (imports follow the setup they depend on: a monkeypatch, a timm registration)

import json
import os
import sys
from pathlib import Path

FD = os.environ.get("FD", "1") == "1"
import torch
from timm.models import register_model
from timm.models.convnext import _create_convnext


@register_model
def equiv_convnext(pretrained=False, **kwargs):
    return _create_convnext(
        "convnext_atto", pretrained, **dict(dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 1024)), **kwargs)
    )


from mean_geo.losses import CAMPLoss, DACLoss, Sample4GeoLoss
from mean_geo.models.official import convert_official_state_dict, load_official_checkpoint
from mean_geo.models.peers import CAMP, DAC, Sample4Geo
from mean_geo.training.schedulers import cosine_with_warmup

torch.set_default_dtype(torch.float64)
method, record_file = sys.argv[1], Path(sys.argv[2])
rec = torch.load(record_file, weights_only=False)  # our own record, written by authors_side.py
if method == "dac":
    model, loss = DAC(7, backbone="equiv_convnext", head_dropout=0.0, fast_depthwise=FD, fast_small_maps=FD), DACLoss()
elif method == "camp":
    model, loss = (
        CAMP(7, backbone="equiv_convnext", position_scale=0.1, fast_depthwise=FD, fast_small_maps=FD),
        CAMPLoss(weight_part_mse=1.0),
    )
else:
    model, loss = Sample4Geo(backbone="convnext_atto", fast_depthwise=FD, fast_small_maps=FD), Sample4GeoLoss()
model, loss = model.double(), loss.double()
state0_file = record_file.with_suffix(".state0.pth")
torch.save(rec["state0"], state0_file)
report = load_official_checkpoint(state0_file, model, loss)
print("load:", report.summary(), "| loss state:", report.loss_state)


def rel(a, b):
    """max |a - b| / max |b|; against a reference that is itself rounding noise (max |b| < 1e-12:
    a bias before a BatchNorm, whose gradient is 0 in exact arithmetic) the absolute difference."""
    a, b = a.detach().double(), b.detach().double()
    scale = float(b.abs().max())
    return float((a - b).abs().max() / (scale if scale > 1e-12 else 1.0))


results = {}
sat, dro, labels = rec["batches"][0]
model.eval()
with torch.no_grad():
    results["eval embedding (float32 output)"] = rel(
        model(sat), torch.nn.functional.normalize(rec["eval_embedding"], dim=-1)
    )
    results["eval embedding (float64, before the float32 cast)"] = rel(
        torch.nn.functional.normalize(model.features(sat)[2], dim=-1),
        torch.nn.functional.normalize(rec["eval_embedding"], dim=-1),
    )
model.train()
d_out, s_out = model.forward_pair(dro, sat)
t = rec["train_outputs"]
if "gap_sat" in t:
    results["train embedding (sat)"] = rel(s_out.embedding, t["gap_sat"])
if "aligned_sat" in t:
    results["DSA map (sat)"] = rel(s_out.aligned, t["aligned_sat"])
    results["CE logits (sat, 3 heads)"] = max(rel(a, b) for a, b in zip(s_out.logits, t["cls_sat"], strict=True))
if "parts_sat" in t:
    results["part blocks (sat)"] = rel(s_out.parts, t["parts_sat"])
terms = loss(d_out, s_out, labels)
for name, value in rec["terms"].items():
    results[f"term {name}"] = rel(terms[name], value)

# three steps: AdamW (torch defaults, lr 1e-3, wd 0.01), their cosine schedule (10 steps, 10 % warm-up), clip 100
model.load_state_dict({k: v for k, v in model.state_dict().items()})  # unchanged
load_official_checkpoint(state0_file, model, loss)
params = [*model.parameters(), *loss.parameters()]
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
sched = cosine_with_warmup(opt, total_steps=10, warmup_fraction=0.1)
named = {**{n: p for n, p in model.named_parameters()}, **{f"loss.{n}": p for n, p in loss.named_parameters()}}
for step, (sat, dro, labels) in enumerate(rec["batches"]):
    opt.zero_grad()
    total = loss(*model.forward_pair(dro, sat), labels)["loss"]
    total.backward()
    results[f"step {step + 1} total loss"] = rel(total, rec["step_losses"][step])
    theirs, unplaced, loss_grads = convert_official_state_dict(rec["step_grads"][step], model)
    worst = 0.0
    per = []
    for key, g in theirs.items():
        if key in named and named[key].grad is not None:
            per.append((rel(named[key].grad, g), key))
            worst = max(worst, rel(named[key].grad, g))
    if step == 0 and os.environ.get("PROBE"):
        print(sorted(per, reverse=True)[:6])
    for key, g in loss_grads.items():
        worst = max(worst, rel(named[f"loss.{key}"].grad, g))
    results[f"step {step + 1} gradients (max over {len(theirs) + len(loss_grads)} tensors)"] = worst
    torch.nn.utils.clip_grad_value_(params, 100)
    opt.step()
    sched.step()
after, _, loss_after = convert_official_state_dict(rec["state_after"], model)
ours = model.state_dict()
worst_p = max(rel(ours[k], v) for k, v in after.items() if k in ours and v.dtype.is_floating_point)
worst_abs = max(float((ours[k] - v).abs().max()) for k, v in after.items() if k in ours and v.dtype.is_floating_point)
results["after 3 AdamW steps: parameters + BN stats, max rel"] = worst_p
results["after 3 AdamW steps: max abs difference"] = worst_abs
if os.environ.get("PROBE"):
    print(
        sorted(
            (
                (float((ours[k] - v).abs().max()), k)
                for k, v in after.items()
                if k in ours and v.dtype.is_floating_point
            ),
            reverse=True,
        )[:8]
    )
for key, v in loss_after.items():
    results[f"after 3 steps: {key}"] = rel(dict(loss.named_parameters())[key].detach(), v)
print(json.dumps(results, indent=1))
