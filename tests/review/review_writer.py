"""A reviewer that never stops: run as a subprocess and killed with SIGKILL by the tests.

``python -m tests.review.review_writer FOLDER`` goes through the worklist in FOLDER: each case
gets a verdict (every third a corrected mask), and the case name is printed once its change is
saved. After the last case it keeps rewriting comments, so a kill always lands in a write.
"""

from __future__ import annotations

import itertools
import sys

from core.io import read_image
from core.review import ReviewState, read_worklist


def main(folder: str) -> None:
    worklist = read_worklist(folder)
    state = ReviewState(worklist)
    for index, case in enumerate(worklist.cases):
        state.set_current(case.name)
        if index % 3 == 2:
            image = read_image(case.image)
            mask = (image.array > 50).astype("uint8")
            state.save_corrected(
                case.name, mask, image, edit_dice=0.5, volumes={"lesion": 1.0}, reviewer="kill"
            )
        else:
            state.set_status(case.name, "accepted" if index % 3 == 0 else "rejected", "kill")
        state.set_comment(case.name, f"seen {case.name}")
        print(case.name, flush=True)
    for count in itertools.count():
        case = worklist.cases[count % len(worklist.cases)]
        state.set_comment(case.name, f"seen {case.name}")


if __name__ == "__main__":
    main(sys.argv[1])
