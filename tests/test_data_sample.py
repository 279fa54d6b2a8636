"""The built-in sample corpus: deterministic, sized as asked, internally consistent stories."""

from __future__ import annotations

import re
import time

from autoresearch.data.build import prepare_dataset
from autoresearch.data.manifest import verify_dataset
from autoresearch.data.sample import DEFAULT_TARGET_CHARS, generate_stories


def all_stories(seed: int, chars: int) -> list[str]:
    return [story for batch in generate_stories(seed, chars) for story in batch]


def test_same_seed_same_stories_and_another_seed_differs():
    assert all_stories(7, 50_000) == all_stories(7, 50_000)
    assert all_stories(7, 50_000) != all_stories(8, 50_000)


def test_size_is_close_to_the_target():
    stories = all_stories(1, 200_000)
    total = sum(len(story) for story in stories)
    assert 200_000 <= total < 200_000 + max(len(story) for story in stories)
    assert len(set(stories)) == len(stories)


def test_stories_are_consistent():
    for story in all_stories(3, 100_000):
        hero = re.search(r"named (\w+)\.|^(\w+) was a|was called (\w+)\.", story)
        assert hero, story[:200]
        name = next(group for group in hero.groups() if group)
        assert story.count(name) >= 3  # the hero is named again and again
        owned = re.search(r"had a (\w+) ([\w-]+)\.", story)
        assert owned and story.count(f"{owned.group(1)} {owned.group(2)}") >= 2
        for a, b, total in re.findall(r"(\d+) \w+ and \w+ counted (\d+) more\. \"That makes (\d+)", story):
            assert int(a) + int(b) == int(total)
        for a, b, total in re.findall(r"saw (\d+) \w+, and later (\d+) more, so they saw (\d+)", story):
            assert int(a) + int(b) == int(total)


def test_default_sample_dataset_builds_quickly_at_demo_vocab():
    started = time.perf_counter()
    dataset = prepare_dataset("sample", vocab_size=2048, show_progress=False)
    elapsed = time.perf_counter() - started
    manifest = verify_dataset(dataset)
    assert manifest["vocab_size"] == 2048  # the corpus has enough distinct words for this vocabulary
    assert manifest["parameters"]["source"]["target_chars"] == DEFAULT_TARGET_CHARS
    assert sum(manifest["splits"][split]["bytes"] for split in manifest["splits"]) >= DEFAULT_TARGET_CHARS
    assert min(manifest["splits"][split]["documents"] for split in manifest["splits"]) > 100
    assert elapsed < 15.0, elapsed  # the demo's first step; ~2 s on 2 cores
