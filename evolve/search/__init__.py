"""Search choices a run can make and users can compare (``[search]`` in ``problem.toml``): parent selection
policies, a mutation mix (diff, full rewrite, crossover), adaptive search per island, novelty rejection, co-evolved
strategies and the meta-scratchpad. Without a ``[search]`` table a run behaves exactly as before these existed."""

from evolve.search.settings import (
    SearchConfigError,
    SearchSettings,
    resolve_search_settings,
    search_section_with_flags,
)

__all__ = ["SearchConfigError", "SearchSettings", "resolve_search_settings", "search_section_with_flags"]
