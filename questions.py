"""The 50 non-medical evaluation questions (the seed's ``questions.py``).

A thin re-export of :mod:`interp_playground.questions`, so that ``from questions import QUESTIONS``
works from the repository root as in the original project.
"""

from interp_playground.questions import QUESTIONS, load_questions, select_questions

__all__ = ["QUESTIONS", "load_questions", "select_questions"]
