"""The Prefect flow of ``{{name}}-survey``: a task per field running :func:`{{package}}.survey.survey_item`.

Imported only where the flow runs as a Prefect flow (``rscore flows run``, the service's Prefect job runner,
deployments); needs ``pip install 'rscore[flows]'``.
"""

from __future__ import annotations

from rscore_flows.per_input import per_input_flow

from {{package}}.survey import SURVEY, survey_item

vegetation_survey = per_input_flow(SURVEY.name, survey_item, SURVEY.description, default_query="vegetation")
