"""``cmim embed`` streams: the peak memory of the process does not grow with the number of molecules
in the file, nor with the number of chunks they are embedded in.

Each run is a fresh ``cmim embed`` process measured by ``benchmarks/performance/embed_memory.py``, so the
peak is that of the command alone (not of this test process, which holds models and data sets).
"""

import pytest

from benchmarks.performance.embed_memory import run_embed, write_smiles

MIB = 2**20

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(fitted, tmp_path_factory):
    return fitted.save_pretrained(tmp_path_factory.mktemp("streaming") / "model")


def test_peak_memory_of_cmim_embed_stays_flat_with_more_molecules_and_more_chunks(model, tmp_path,
                                                                                   monkeypatch):
    # One torch thread in every run: the thread count, which by default follows the machine's
    # load, moves the peak by megabytes of its own.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    peak = {}
    for n, chunk_size in ((1_500, 100), (6_000, 100), (6_000, 2_000)):
        source = tmp_path / f"{n}.smi"
        if not source.exists():
            write_smiles(source, n)
        run = run_embed(source, tmp_path / "out.npy", model, chunk_size, "--errors", "nan")
        assert run.returncode == 0, run.stderr
        peak[n, chunk_size] = run.peak_rss_bytes
    growth = {key: f"{value / MIB:.0f} MiB" for key, value in peak.items()}  # shown when failing
    # Four times the molecules, in 45 more chunks of the same size: no more than noise (measured:
    # within 3 MiB; keeping 5 kB of each molecule, or 450 kB of each chunk, would add 20 MiB).
    assert peak[6_000, 100] - peak[1_500, 100] < 20 * MIB, growth
    # 60 chunks of 100 against 3 of 2,000: the larger chunks cost more (measured: +30-38 MiB), the
    # extra chunks nothing.
    assert peak[6_000, 100] - peak[6_000, 2_000] < 10 * MIB, growth
    assert abs(peak[6_000, 100] - peak[6_000, 2_000]) < 60 * MIB, growth
