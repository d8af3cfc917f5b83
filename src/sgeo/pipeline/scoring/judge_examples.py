"""The worked examples of SpatialRGPT's qualitative judge prompt, one set per category, verbatim.

Source: github.com/AnjieCheng/SpatialRGPT, scripts/srgpt/eval/prompt_templates/<category>.txt, read by
`evaluate_qual_question` in scripts/srgpt/eval/evaluate_spatial_with_gpt4.py, which strips each file and fills
its `{question}`; every `*_choice` category uses `choice`.
"""

EXAMPLES: dict[str, str] = {
    "above_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is above Region [1].
Response: Indeed, Region [0] is positioned over Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] is located above Region [1].
Response: Yes, Region [0] is above Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] is positioned over Region [1].
Response: Actually, Region [0] is below Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: Incorrect, Region [0] is not positioned above Region [1].
Response: Yes, Region [0] is above Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: Incorrect, Region [0] is not positioned above Region [1].
Response: Actually, Region [0] is below Region [1].
"your_mark": 1""",
    "behind_predicate": """Example 1:
Question: {question}
Answer: Yes, it is.
Response: Yes, Region [0] is further from the viewer.
"your_mark": 1

Example 2:
Question: {question}
Answer: Yes, it is behind Region [1].
Response: Yes, Region [0] is behind Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: That is True.
Response: No, Region [0] is closer to the viewer.
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [1] is in front of Region [0].
Response: Yes, it is behind Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: That is False.
Response: No, it is in front of Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: No, Region [1] is in front of Region [0].
Response: No, Region [0] is closer to the viewer.
"your_mark": 1""",
    "below_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is below Region [1].
Response: Indeed, Region [0] is positioned under Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] is located below Region [1].
Response: Yes, Region [0] is below Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] is positioned under Region [1].
Response: Actually, Region [0] is above Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: Incorrect, Region [0] is not positioned below Region [1].
Response: Yes, Region [0] is below Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: Incorrect, Region [0] is not positioned below Region [1].
Response: Actually, Region [0] is above Region [1].
"your_mark": 1""",
    "big_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is bigger than Region [1].
Response: Indeed, Region [0] has a larger size compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] is larger in size than Region [1].
Response: Yes, Region [0] is bigger than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a larger size compared to Region [1].
Response: Actually, Region [0] might be smaller than Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not bigger than Region [1].
Response: Yes, Region [0] is bigger than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not bigger than Region [1].
Response: Actually, Region [0] might be smaller than Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: Actually, Region [0] might be smaller than Region [1].
Response: Incorrect, Region [0] is not larger than Region [1].
"your_mark": 1""",
    "choice": """Example 1:
Question: Who is taller, Region [0] or Region [1]?
Answer: With more height is Region [0].
Response: Standing taller between the two is Region [1].
"your_mark": 0

Example 2:
Question: Between Region [0] and Region [1], which one appears on the right side from the viewer's perspective?
Answer: From the viewer's perspective, Region [1] appears more on the right side.
Response: Region [1].
"your_mark": 1

Example 3:
Question: Which is in front, Region [0] or Region [1]?
Answer: Positioned in front is Region [1].
Response: Region [1] is more forward.
"your_mark": 1

Example 4:
Question: Which is above, Region [0] or Region [1]?
Answer: Region [1] is above.
Response: Region [0] is higher up.
"your_mark": 0""",
    "front_predicate": """Example 1:
Question: {question}
Answer: Yes, it is.
Response: Yes, Region [0] is closer to the viewer.
"your_mark": 1

Example 2:
Question: {question}
Answer: Yes, it is in front of Region [1].
Response: Yes, Region [0] is in front of Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: That is True.
Response: No, Region [0] is further to the viewer.
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is behind Region [1].
Response: Yes, it is in front of Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: That is False.
Response: No, it is behind Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: No, Region [0] is behind Region [1].
Response: No, Region [0] is further to the viewer.
"your_mark": 1""",
    "left_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is to the left of Region [1].
Response: Indeed, Region [0] is positioned on the left side of Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, you'll find Region [0] to the left of Region [1].
Response: Yes, Region [0] is to the left of Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] is positioned on the left side of Region [1].
Response: In fact, Region [0] is to the right of Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: Incorrect, Region [0] is not on the left side of Region [1].
Response: Correct, you'll find Region [0] to the left of Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: Incorrect, Region [0] is not on the left side of Region [1].
Response: In fact, Region [0] is to the right of Region [1].
"your_mark": 1""",
    "right_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is to the right of Region [1].
Response: Indeed, Region [0] is positioned on the right side of Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, you'll find Region [0] to the right of Region [1].
Response: Yes, Region [0] is to the right of Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] is positioned on the right side of Region [1].
Response: In fact, Region [0] is to the left of Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: Incorrect, Region [0] is not on the right side of Region [1].
Response: Correct, you'll find Region [0] to the right of Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: Incorrect, Region [0] is not on the right side of Region [1].
Response: In fact, Region [0] is to the left of Region [1].
"your_mark": 1""",
    "short_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is shorter than Region [1].
Response: Indeed, Region [0] has a lesser height compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] is not as tall as Region [1].
Response: Yes, Region [0] is shorter than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a lesser height compared to Region [1].
Response: Incorrect, Region [0]'s height does not fall short of Region [1]'s.
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not shorter than Region [1].
Response: Yes, Region [0] is shorter than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not shorter than Region [1].
Response: Incorrect, Region [0]'s height does not fall short of Region [1]'s.
"your_mark": 1

Example 6:
Question: {question}
Answer: Incorrect, Region [0]'s height does not fall short of Region [1]'s.
Response: In fact, Region [0] may be taller than Region [1].
"your_mark": 1""",
    "small_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is smaller than Region [1].
Response: Indeed, Region [0] has a smaller size compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] occupies less space than Region [1].
Response: Yes, Region [0] is smaller than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a smaller size compared to Region [1].
Response: Incorrect, Region [0] is not smaller in size than Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not smaller than Region [1].
Response: Yes, Region [0] is smaller than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not smaller than Region [1].
Response: Incorrect, Region [0] is not smaller in size than Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: Incorrect, Region [0] is not smaller in size than Region [1].
Response: Actually, Region [0] might be larger than Region [1].
"your_mark": 1""",
    "tall_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is taller than Region [1].
Response: Indeed, Region [0] has a greater height compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0] is much taller as Region [1].
Response: Yes, Region [0] is taller than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a greater height compared to Region [1].
Response: In fact, Region [0] may be shorter than Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not taller than Region [1].
Response: Yes, Region [0] is taller than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not taller than Region [1].
Response: In fact, Region [0] may be shorter than Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: In fact, Region [0] may be shorter than Region [1].
Response: Incorrect, Region [0]'s height is not larger of Region [1]'s.
"your_mark": 1""",
    "thin_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is thinner than Region [1].
Response: Indeed, Region [0] has a lesser width compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, Region [0]'s width is less than Region [1]'s.
Response: Yes, Region [0] is thinner than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a lesser width compared to Region [1].
Response: Incorrect, Region [0]'s width is not less than Region [1]'s.
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not thinner than Region [1].
Response: Yes, Region [0] is thinner than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not thinner than Region [1].
Response: Incorrect, Region [0]'s width is not less than Region [1]'s.
"your_mark": 1

Example 6:
Question: {question}
Answer: Incorrect, Region [0]'s width is not less than Region [1]'s.
Response: In fact, Region [0] might be wider than Region [1].
"your_mark": 1""",
    "wide_predicate": """Example 1:
Question: {question}
Answer: Yes, Region [0] is wider than Region [1].
Response: Indeed, Region [0] has a greater width compared to Region [1].
"your_mark": 1

Example 2:
Question: {question}
Answer: Correct, the width of Region [0] exceeds that of Region [1].
Response: Yes, Region [0] is wider than Region [1].
"your_mark": 1

Example 3:
Question: {question}
Answer: Indeed, Region [0] has a greater width compared to Region [1].
Response: In fact, Region [0] might be narrower than Region [1].
"your_mark": 0

Example 4:
Question: {question}
Answer: No, Region [0] is not wider than Region [1].
Response: Yes, Region [0] is wider than Region [1].
"your_mark": 0

Example 5:
Question: {question}
Answer: No, Region [0] is not wider than Region [1].
Response: In fact, Region [0] might be narrower than Region [1].
"your_mark": 1

Example 6:
Question: {question}
Answer: In fact, Region [0] might be narrower than Region [1].
Response: Incorrect, Region [0]'s width does not surpass Region [1]'s.
"your_mark": 1""",
}
