"""The upward feed to the provincial platform (Art. 5, 18 "实时上传"): upload records, the province
profile, the feed that sends them, and the operator's commands."""
