//! Machine learning shared by the `train`, `evaluate` and `deploy` plugins and by model serving:
//! reading tables into matrices, the algorithms, the model envelope, and preprocessing.

pub mod fit;
pub mod model;
pub mod preprocess;
pub mod table;
pub mod tree;
