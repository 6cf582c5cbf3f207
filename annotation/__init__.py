"""The manual loop: frames the fit got wrong -> people's 2D clicks in Label Studio -> manual points.

    queue.jsonl --annotate--> Label Studio tasks (crops, pre-annotations) --people--> annotations
                --merge--> sequences/<seq>/keypoints2d_manual.h5 (then, in pipeline.merge, the
                           triangulate and fit stages on those frames)

``server`` runs Label Studio (its own environment, one server per session on 127.0.0.1),
``tasks`` makes the project and imports the tasks, ``merge`` pulls, checks and merges the
annotations and records them; ``status`` counts where the queue is; ``cli`` holds the commands.
"""
