"""Paired bootstrap of balanced gender accuracy (LFW hold-out) and of UTKFace metrics: candidate - default."""
import csv, sys, numpy as np
truth = {r["file"].split("/")[-1]: r["gender"] for r in csv.DictReader(open("/work/shared/data/lfw/labels.csv"))}
def load(n):
    return {r["file"].split("/")[-1]: r["gender"] for r in csv.DictReader(open(f"/work/evals/{n}_lfw.csv"))}
base = load(sys.argv[1])
for n in sys.argv[2:]:
    cand = load(n)
    files = sorted(base)
    t = np.array([truth[f] == "male" for f in files]); a = np.array([base[f] == "male" for f in files]) == t; b = np.array([cand[f] == "male" for f in files]) == t
    rng = np.random.default_rng(0); d = []
    for _ in range(2000):
        i = rng.integers(0, len(files), len(files))
        ti, ai, bi = t[i], a[i], b[i]
        bal = lambda x: (x[ti].mean() + x[~ti].mean()) / 2
        d.append(bal(bi) - bal(ai))
    bal = lambda x: (x[t].mean() + x[~t].mean()) / 2
    print(f"{n} - {sys.argv[1]}: balanced {100*(bal(b)-bal(a)):+.2f} [{100*np.percentile(d,2.5):+.2f}, {100*np.percentile(d,97.5):+.2f}]; women {100*(b[~t].mean()-a[~t].mean()):+.2f}, men {100*(b[t].mean()-a[t].mean()):+.2f}")
