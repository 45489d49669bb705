"""Metric functions against numbers worked out by hand."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from unlearnkit.metrics import mia, muse, text, tofu

L = math.log


def S(logprobs, hits=None, mu=None, sigma=None):
    lp = np.log(np.asarray(logprobs, dtype=np.float64)) if hits == "probs" else np.asarray(logprobs, dtype=np.float64)
    return SimpleNamespace(logprobs=lp, argmax_hits=np.ones(len(lp), bool) if hits in (None, "probs") else np.asarray(hits, bool),
                           mu=None if mu is None else np.asarray(mu, float), sigma=None if sigma is None else np.asarray(sigma, float))


def P(*probs):
    """A sample whose answer tokens have these probabilities."""
    return S(probs, "probs")


# ---------------------------------------------------------------- TOFU
def test_answer_probability_is_per_token_geometric_mean():
    assert tofu.answer_probability(S([-1.0, -3.0])) == pytest.approx(math.exp(-2.0))
    # answers of different lengths: 0.5 (one token) and 0.25*0.0625 (two) -> 0.5 and 0.125
    assert tofu.answer_probability(P(0.5)) == pytest.approx(0.5)
    assert tofu.answer_probability(P(0.25, 0.0625)) == pytest.approx(0.125)
    assert tofu.answer_probability([L(0.1)] * 7) == pytest.approx(0.1)  # plain arrays work too
    with pytest.raises(ValueError):
        tofu.answer_probability([])


def test_normalised_probability():
    # p_true = 0.5 (two tokens of 0.5); perturbed 0.25 (one token) and sqrt(0.25*0.0625) = 0.125
    v = tofu.normalised_probability(P(0.5, 0.5), [P(0.25), P(0.25, 0.0625)])
    assert v == pytest.approx(0.5 / 0.875)  # = 4/7


def test_truth_ratio_hand_value():
    # L(paraphrased) = log 2; L(perturbed) = log 4 and log 8, mean 2.5 log 2 -> R = 2^1.5
    r = tofu.truth_ratio(P(0.5, 0.5), [P(0.25), P(0.125, 0.125, 0.125)])
    assert r == pytest.approx(2 ** 1.5)
    # equally likely -> R = 1
    assert tofu.truth_ratio(P(0.3), [P(0.3), P(0.3)]) == pytest.approx(1.0)
    # a model preferring the false answers has R < 1
    assert tofu.truth_ratio(P(0.1), [P(0.4)]) == pytest.approx(0.25)


def test_truth_ratio_score_forget_and_utility():
    assert tofu.truth_ratio_score([2.0, 0.5], forget=True) == pytest.approx(0.5)
    assert tofu.truth_ratio_score([1.0, 1.0], forget=True) == pytest.approx(1.0)
    # max(0, 1-1/R): 0.5, 0 (R=0.5 clipped), 0.75
    assert tofu.truth_ratio_score([2.0, 0.5, 4.0], forget=False) == pytest.approx(1.25 / 3)


def test_forget_quality_ks():
    r = [0.3, 0.9, 1.2, 2.0, 0.7]
    fq = tofu.forget_quality(r, list(r))
    assert fq["p"] == 1.0 and fq["log10_p"] == 0.0 and fq["n"] == 5 and fq["ks_statistic"] == 0.0
    # completely separated samples of 3 and 3: exact p = 2 / C(6,3) = 0.1
    fq = tofu.forget_quality([1, 2, 3], [4, 5, 6])
    assert fq["p"] == pytest.approx(0.1) and fq["log10_p"] == pytest.approx(-1.0) and fq["ks_statistic"] == 1.0
    assert fq["n"] == 3 and fq["n_oracle"] == 3


def test_paired_truth_gap_is_the_mean_log_difference_fact_by_fact():
    """The gap against the twins: mean and standard error of log R(forget) - log R(twin), and the
    exact Wilcoxon signed-rank p, worked by hand: five differences all of one sign give the two
    most extreme of 2^5 equally likely sign patterns, p = 2/32."""
    twins = [0.5, 1.5, 0.8, 2.0, 1.1]
    d = [0.1, 0.2, 0.3, 0.4, 0.5]
    g = tofu.paired_truth_gap([t * math.exp(x) for t, x in zip(twins, d)], twins)
    assert g["mean"] == pytest.approx(0.3) and g["se"] == pytest.approx(math.sqrt(0.025 / 5))
    assert g["p"] == pytest.approx(2 / 32) and g["n"] == 5
    assert tofu.paired_truth_gap(twins, twins) == {"mean": 0.0, "se": 0.0, "p": 1.0, "n": 5}
    # a small shift on facts that differ widely: the two-sample test (forget quality's) cannot see
    # it, the pairs can (ten of one sign: p = 2/1024)
    spread = [0.2 * k for k in range(1, 11)]
    shifted = [x * math.exp(0.05) for x in spread]
    assert tofu.forget_quality(shifted, spread)["p"] > 0.9
    assert tofu.paired_truth_gap(shifted, spread)["p"] == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match="two or more pairs"):
        tofu.paired_truth_gap([1.0, 2.0], [1.0])


def test_harmonic_mean_and_model_utility():
    assert tofu.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert tofu.harmonic_mean([0.9, 0.0, 0.8]) == 0.0
    splits = {
        "retain": {"probability": 0.5, "rouge": 0.5, "truth_ratio": 0.5},
        "world_facts": {"probability": 0.5, "rouge": 1.0, "truth_ratio": 0.5},
        "neighbours": {"probability": 0.5, "rouge": 0.5, "truth_ratio": 0.5},
    }
    assert tofu.model_utility(splits) == pytest.approx(9 / 17)  # 9 / (8*2 + 1)
    splits["neighbours"]["rouge"] = 0.0
    assert tofu.model_utility(splits) == 0.0


def test_rouge_recall_and_stemming():
    assert tofu.rouge_recall_mean(["Thornwick"], ["It is Thornwick."]) == pytest.approx(1 / 3)
    assert tofu.rouge_recall_mean(["It is Thornwick, a town"], ["Thornwick"]) == 1.0  # recall ignores extra words
    assert text.rouge_l_recall("she runs", "She running") == 1.0  # Porter stemmer: run
    assert tofu.rouge_recall_mean(["a", "b"], ["a", "c"]) == 0.5


def test_exact_memorisation_and_extraction_strength():
    assert tofu.exact_memorisation(S([0, 0, 0, 0], [1, 0, 1, 1])) == 0.75
    assert tofu.extraction_strength([False, True, True]) == pytest.approx(2 / 3)  # k = 1
    assert tofu.extraction_strength([True, False, True, True]) == 0.5  # k = 2
    assert tofu.extraction_strength([True, True, True]) == 1.0  # k = 0: reproduced from the question
    # not even the last token reproduced: 1/|a|, open-unlearning's floor (0 here until session 39)
    assert tofu.extraction_strength([True, True, False]) == pytest.approx(1 / 3)
    assert tofu.extraction_strength(S([0, 0, 0, 0, 0], [0, 0, 0, 0, 1])) == pytest.approx(1 / 5)


def test_extraction_strength_by_search_matches_hits():
    hits = [True, False, False, True, True]
    calls = []

    def reproduces(k):  # greedy from prefix k reproduces the rest iff every later argmax hits
        calls.append(k)
        return all(hits[k:])

    assert tofu.extraction_strength_by_search(5, reproduces) == pytest.approx(tofu.extraction_strength(hits)) == 0.4
    assert calls == [0, 1, 2, 3]
    assert tofu.extraction_strength_by_search(3, lambda k: False) == pytest.approx(1 / 3)


def test_eos_is_left_out_of_exact_memorisation_and_extraction_strength():
    # an answer said in full (two hits) that does not stop (eos missed)
    said_not_stopped = S([-0.1, -0.1, -5.0], [1, 1, 0])
    said_not_stopped.eos = True
    assert tofu.exact_memorisation(said_not_stopped) == 1.0  # 2 of 2 answer tokens; with eos 2/3
    assert tofu.extraction_strength(said_not_stopped) == 1.0  # with eos it was 0
    # no eos marked (cut by max_length, or a plain array): every position counts
    assert tofu.exact_memorisation(S([0, 0, 0], [1, 1, 0])) == pytest.approx(2 / 3)
    assert tofu.extraction_strength([True, True, False]) == pytest.approx(1 / 3)
    # an answer of eos alone keeps its one position
    only_eos = S([-1.0], [1])
    only_eos.eos = True
    assert tofu.exact_memorisation(only_eos) == 1.0
    # the probability keeps eos, as TOFU's loss does: exp(mean(-0.1, -0.1, -5.0))
    assert tofu.answer_probability(said_not_stopped) == pytest.approx(math.exp(-5.2 / 3))


# ---------------------------------------------------------------- MIA
def test_min_k_and_min_k_plus_plus_leave_out_eos():
    x = S([-1.0, -2.0, -9.0])  # -9 is the eos
    x.eos = True
    assert mia.min_k_score(x, 0.5) == pytest.approx(-2.0)  # floor(0.5 * 2) = 1 of [-1, -2]; with eos: -9
    assert mia.min_k_score(x, 1.0) == pytest.approx(-1.5)
    z = S([-1.0, -2.0, -9.0], mu=[-2.0, -2.0, -1.0], sigma=[1.0, 0.5, 1.0])  # z = 1, 0, (-8: eos)
    z.eos = True
    assert mia.min_k_plus_plus_score(z, 0.5) == pytest.approx(0.0)
    assert mia.min_k_plus_plus_score(z, 1.0) == pytest.approx(0.5)
    # the LOSS attack keeps eos (the issue names only Min-K% and Min-K%++)
    assert mia.loss_score(x) == pytest.approx(-4.0)


def test_min_k():
    x = [-1.0, -5.0, -2.0, -3.0, -4.0]
    assert mia.min_k_score(x, 0.4) == pytest.approx(-4.5)
    assert mia.min_k_score(x, 0.1) == pytest.approx(-5.0)  # at least one token
    assert mia.min_k_score(x, 1.0) == pytest.approx(-3.0)
    assert mia.min_k_score([-1.0] * 7 + [-2.0, -3.0, -4.0], 0.3) == pytest.approx(-3.0)  # 0.3*10 -> 3 tokens
    with pytest.raises(ValueError):
        mia.min_k_score(x, 0.0)


def test_min_k_plus_plus():
    s = S([-1.0, -2.0, -3.0], mu=[-2.0, -2.0, -1.0], sigma=[1.0, 0.5, 4.0])  # z = 1, 0, -0.5
    assert mia.min_k_plus_plus_score(s, 1 / 3) == pytest.approx(-0.5)
    assert mia.min_k_plus_plus_score(s, 2 / 3) == pytest.approx(-0.25)
    assert mia.min_k_plus_plus_score(s, 1.0) == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError):
        mia.min_k_plus_plus_score(S([-1.0]), 0.2)


def test_loss_zlib_reference_scores():
    assert mia.loss_score([-1.0, -3.0]) == -2.0
    assert text.zlib_length("aaaa") == 12
    assert mia.zlib_score([-1.0, -3.0], "aaaa") == pytest.approx(-2.0 / 12)
    assert mia.reference_score(S([-1.0, -1.0]), S([-3.0])) == pytest.approx(2.0)  # ref loss 3 - loss 1


def test_auc_orientation():
    assert mia.auc([3, 2], [1, 0]) == 1.0  # members score higher: perfectly detected
    assert mia.auc([0, 1], [2, 3]) == 0.0
    assert mia.auc([1, 3], [2, 0]) == 0.75  # 3 of 4 pairs ordered
    assert mia.auc([1], [1]) == 0.5  # ties count half


def test_attack_aucs_members_with_low_loss_are_detected():
    members = [S([-0.1, -0.2], mu=[-1, -1], sigma=[1, 1]), S([-0.3, -0.1], mu=[-1, -1], sigma=[1, 1])]
    non = [S([-2.0, -3.0], mu=[-1, -1], sigma=[1, 1]), S([-4.0, -1.0], mu=[-1, -1], sigma=[1, 1])]
    out = mia.attack_aucs(members, ["ab", "cd"], non, ["ef", "gh"], ref_members=[S([-1.0])] * 2,
                          ref_nonmembers=[S([-1.0])] * 2)
    assert out == {"loss": 1.0, "zlib": 1.0, "min_k": 1.0, "min_k_plus_plus": 1.0, "reference": 1.0}
    out = mia.attack_aucs([S([-1.0])], ["a"], [S([-2.0])], ["b"])
    assert set(out) == {"loss", "zlib", "min_k"}  # no stats, no reference model


# ---------------------------------------------------------------- MUSE
def test_verbmem_knowmem_f1():
    # LCS("a b c", "a b d e") = 2: P = 2/3, R = 1/2, F1 = 4/7
    assert muse.verbmem(["a b c"], ["a b d e"]) == pytest.approx(4 / 7)
    assert muse.knowmem(["Thornwick", "x"], ["Thornwick", "y"]) == pytest.approx(0.5)
    # cut before the next question, as MUSE's eval does (get_prefix_before_words_occur)
    assert muse.knowmem(["Thornwick\n\nQuestion: Who?", "Thornwick\nQuestion", "Thornwick Question: x"],
                        ["Thornwick"] * 3) == pytest.approx(1.0)


def test_muse_rouge_has_no_stemmer():
    # "she runs" vs "She running": without the stemmer only "she" matches: P = R = 1/2, F1 = 1/2
    assert muse.knowmem(["she runs"], ["She running"]) == pytest.approx(0.5)
    assert muse.verbmem(["she runs"], ["She running"]) == pytest.approx(0.5)
    assert text.rouge_l_f1("she runs", "She running") == 1.0  # TOFU-style ROUGE stems: run = run


def test_privleak_refuses_aucs_at_different_k():
    assert muse.PRIVLEAK_K == 0.4
    assert muse.privleak(0.6, 0.4, 0.4, 0.4) == pytest.approx((0.4 - 0.6) / 0.6 * 100)
    with pytest.raises(ValueError, match="k = 0.4.*k = 0.2"):
        muse.privleak(0.6, 0.4, 0.4, 0.2)
    with pytest.raises(ValueError, match="k = None"):
        muse.privleak(0.6, 0.4, 0.4, None)  # an oracle result that never recorded its k


def test_privleak_sign_convention():
    assert muse.privleak(0.7, 0.7) == 0.0
    # still memorised: members perfectly detected (AUC 1) where the oracle is at chance -> -100
    assert muse.privleak(1.0, 0.5) == pytest.approx(-100.0)
    # over-unlearned: forget docs look less familiar than holdout -> positive
    assert muse.privleak(0.25, 0.5) == pytest.approx(50.0)
    assert muse.privleak(0.6, 0.4) == pytest.approx((0.4 - 0.6) / 0.6 * 100)
    assert muse.privleak(0.9, 1.0) == math.inf


# ---------------------------------------------------------------- through the real scoring code
V = 6  # 0 pad, 1 bos, 2 eos, 3 "Q", 4 "x", 5 "y"
TABLE = np.full((V, V), 1 / V)
TABLE[3] = [0.05, 0.05, 0.10, 0.10, 0.50, 0.20]  # after Q
TABLE[4] = [0.05, 0.05, 0.40, 0.10, 0.10, 0.30]  # after x
TABLE[5] = [0.05, 0.05, 0.20, 0.10, 0.40, 0.20]  # after y


def _bigram_lm():
    torch = pytest.importorskip("torch")
    from unlearnkit.scoring import LM

    class Decoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(last_hidden_state=torch.nn.functional.one_hot(input_ids, V).float())

    class Bigram(torch.nn.Module):
        """next-token distribution = TABLE[previous token]: hidden = one-hot, head = log TABLE."""

        def __init__(self):
            super().__init__()
            self.decoder = Decoder()
            self.head = torch.nn.Linear(V, V, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(torch.tensor(np.log(TABLE).T, dtype=torch.float32))

        def get_decoder(self):
            return self.decoder

        def get_output_embeddings(self):
            return self.head

    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
        ids = {"Q": 3, "x": 4, "y": 5}

        def __call__(self, texts, add_special_tokens=False):
            one = lambda t: [self.ids[w] for w in t.split()]  # noqa: E731
            return {"input_ids": one(texts) if isinstance(texts, str) else [one(t) for t in texts]}

    return LM(Bigram(), Tok())


@pytest.mark.parametrize("batch_size", [1, 3])
def test_scoring_on_fixed_logit_table(batch_size):
    lm = _bigram_lm()
    # three answers of different lengths in one right-padded batch
    out = lm.score(["Q", "Q", "Q"], ["x", "x y", "y y x"], stats=True, batch_size=batch_size)
    a, b, c = out
    np.testing.assert_allclose(a.logprobs, [L(0.5), L(0.4)], rtol=1e-6)  # x|Q, eos|x
    np.testing.assert_allclose(b.logprobs, [L(0.5), L(0.3), L(0.2)], rtol=1e-6)  # x|Q, y|x, eos|y
    np.testing.assert_allclose(c.logprobs, [L(0.2), L(0.2), L(0.4), L(0.4)], rtol=1e-6)
    assert a.argmax_hits.tolist() == [True, True]
    assert b.argmax_hits.tolist() == [True, False, False]
    assert c.argmax_hits.tolist() == [False, False, True, True]
    row = TABLE[3]
    mu = float((row * np.log(row)).sum())
    sd = math.sqrt(float((row * np.log(row) ** 2).sum()) - mu ** 2)
    assert a.mu[0] == pytest.approx(mu, rel=1e-5) and a.sigma[0] == pytest.approx(sd, rel=1e-5)

    assert a.eos and b.eos and c.eos  # every answer ends with eos (nothing cut by max_length)
    assert tofu.answer_probability(a) == pytest.approx(math.sqrt(0.2), rel=1e-6)  # eos counts here (TOFU)
    assert tofu.exact_memorisation(b) == pytest.approx(1 / 2)  # hits x, misses y; eos left out
    assert tofu.extraction_strength(a) == 1.0
    assert tofu.extraction_strength(b) == 0.5  # hits T F (eos left out): no suffix, open-unlearning's 1/|a|
    assert tofu.extraction_strength(c) == pytest.approx(1 / 3)  # hits F F T (eos left out): k = 2 of 3
    # truth ratio of "x" (paraphrased) against "x y" and "y y x": exp(mean(L_b, L_c) - L_a)
    la, lb, lc = -np.mean(np.log([0.5, 0.4])), -np.mean(np.log([0.5, 0.3, 0.2])), -np.mean(np.log([0.2, 0.2, 0.4, 0.4]))
    assert tofu.truth_ratio(a, [b, c]) == pytest.approx(math.exp((lb + lc) / 2 - la), rel=1e-6)
    assert mia.min_k_score(c, 0.5) == pytest.approx(L(0.2), rel=1e-6)


# ---------------------------------------------------------------- PrivLeak through evaluate
class WordLM:
    """A fake LM: each answer word is a number, its token's log p is minus that number; every answer
    ends with an eos of log p -0.1 (marked `eos`). Greedy answers are empty."""

    def score(self, prompts, answers, stats=False, batch_size=None):
        from unlearnkit.scoring import SampleScore

        out = []
        for a in answers:
            words = [w for w in a.split() if w.replace(".", "").isdigit()] or ["1"]
            lp = np.array([-float(w) for w in words] + [-0.1])
            out.append(SampleScore(lp, np.zeros(lp.size, bool), eos=True))
        return out

    def generate(self, prompts, max_new_tokens=32, batch_size=None, **kw):
        return [""] * len(prompts)


def _doc_world():
    from unlearnkit.data import DocRecord, QARecord, WorldData

    qa = QARecord(id="f0", subject="s", question="q?", answer="1", paraphrased_answer="1", perturbed_answers=["2"])
    docs = lambda texts, tag: [DocRecord(id=f"{tag}{i}", subject="s", text=t) for i, t in enumerate(texts)]  # noqa: E731
    # members: Min-20% = -2.5 and -1; Min-40% = (-2.5 - 1)/2 = -1.75 and -1.
    # non-members: -2 and -3 at either k. AUC at k=0.2: 3 of 4 pairs = 0.75; at k=0.4: 1.0.
    return WorldData(forget=[qa], forget_docs=docs(["1 1 1 1 2.5", "1 1 1 1 1"], "m"),
                     holdout_docs=docs(["2 2 2 2 2", "3 3 3 3 3"], "h"))


def test_evaluate_privleak_uses_min_40_and_records_k():
    from unlearnkit.evaluate import evaluate

    res = evaluate(WordLM(), _doc_world(), suites=("muse", "mia"),
                   oracle={"per_sample": {"mink_auc": {"docs": 0.5}, "mink_k": 0.4}})
    assert res["per_sample"]["mink_auc"] == {"docs": 1.0} and res["per_sample"]["mink_k"] == 0.4
    assert res["splits"]["mia"]["docs"]["privleak_min_k_auc"] == {"auc": 1.0, "k": 0.4}
    assert res["mia_auc"]["min_k"] == 0.75 and res["splits"]["mia"]["docs"]["k"] == {"min_k": 0.2}  # the MIA table keeps k = 0.2
    assert res["privleak"] == pytest.approx((0.5 - 1.0) / (1 - 0.5) * 100)  # -100; at k = 0.2 it would be -50
    assert res["config"]["privleak_k"] == 0.4


def test_evaluate_privleak_refuses_an_oracle_at_another_k():
    from unlearnkit.evaluate import evaluate

    for oracle_ps in ({"mink_auc": {"docs": 0.5}, "mink_k": 0.2}, {"mink_auc": {"docs": 0.5}}):
        res = evaluate(WordLM(), _doc_world(), suites=("muse",), oracle={"per_sample": oracle_ps})
        assert res["privleak"] is None
        assert any("PrivLeak compares Min-K% AUCs at one k" in n for n in res["notes"])
        assert res["verdict"]["privacy"]["pass"] is None
